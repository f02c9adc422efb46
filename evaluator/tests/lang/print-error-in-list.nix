[ 1 (throw "list element forced by printing") ]
