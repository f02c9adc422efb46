rec { x = # comment ended by CRy; y = 1; s = "ab
c"; t = ''  x
  y''; }
