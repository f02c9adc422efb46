let base = { a = 1; }; in (base // null).a
