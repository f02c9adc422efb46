#!flaked impure
builtins.currentSystem
