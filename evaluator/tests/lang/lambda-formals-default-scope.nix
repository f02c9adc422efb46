let b = 100; in ({ a ? b, b ? 1 }: a) { }
