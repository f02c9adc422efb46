!"pre ${"x"} post"
