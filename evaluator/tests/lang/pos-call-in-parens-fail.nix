((builtins.attrNames { }) 1)
