assert { a = 1; inherit (builtins) b; } == rec { c = 2; }; 1
