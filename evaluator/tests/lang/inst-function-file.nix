#!flaked instantiate
{ a ? 3 }: { x = a; }
