[ (true && false) (true || false) (!true) (false -> true) (true -> false) (false -> throw "lazy") (false && throw "lazy") (true || throw "lazy") ]
