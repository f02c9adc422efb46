builtins.head "notalist"
