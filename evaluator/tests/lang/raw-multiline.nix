#!flaked raw
''
  line1
  line2
''
