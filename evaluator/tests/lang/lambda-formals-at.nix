(args@{ a, ... }: args) { a = 1; b = 2; }
