let mk = n: if n == 0 then [ ] else [ (mk (n - 1)) ]; in mk 20
