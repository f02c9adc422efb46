(args@{ a ? 5 }: args) { }
