[ (throw "a") ] == [ ]
