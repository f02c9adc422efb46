#!flaked attr=x
{ a ? 3 }: { x = a; }
