builtins.filterSource 1 /nonexistent
