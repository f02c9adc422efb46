"${{ __toString = self: "hello ${self.n}"; n = "world"; }}"
