assert (let y = 1; in if y == 1 then false else true); 1
