({ zeta }: zeta) { zeta = 1; beta = 2; alpha = 3; }
