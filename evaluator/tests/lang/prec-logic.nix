[ (true || false && false) (!false && false) (false -> false -> false) (true -> false || true) (1 < 2 == true) ]
