''
  a '''quoted'''
  dollar ''${x}
  newline ''\n tab ''\t backslash ''\\ other ''\q
  $ and $$ and ''$
''
