({ a ? throw "unused" }: 1) { }
