let x = "world"; n = 5; in [ "hello ${x}" "n=${toString n}" "${x}${x}" "nested ${"inner ${x}"}" ]
