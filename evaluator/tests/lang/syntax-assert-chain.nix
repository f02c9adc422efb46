assert true; assert 1 < 2; with { }; let x = 1; in if x == 1 then "deep" else "no"
