[ (toString 1.0) (toString 0.1) (toString 1.0e21) (toString 123456.789) "${toString (1.0/3)}" (toString 1.0e-7) ]
