let x = "X"; y = "multi\nline"; in ''
  start ${x} end
    ${y}
  ${x}
''
