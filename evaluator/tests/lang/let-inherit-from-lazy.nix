let inherit (throw "never") a; in 5
