{ a = 1; }.b or 7
