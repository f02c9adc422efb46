#!flaked raw
"plain text no newline"
