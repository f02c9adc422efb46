({ a ? throw "default forced" }: a + 1) { }
