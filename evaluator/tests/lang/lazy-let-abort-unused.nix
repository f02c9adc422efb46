let x = abort "no"; y = x; in 2
