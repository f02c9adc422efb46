let nats = n: [ n ] ++ (if n > 3 then [ ] else nats (n + 1)); ones = { head = 1; tail = ones; }; in [ (nats 0) ones.tail.tail.tail.head ]
