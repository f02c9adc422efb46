#!flaked raw
{ __toString = s: "custom"; }
