let v = "v"; in ''
    ${v}
  two
''
