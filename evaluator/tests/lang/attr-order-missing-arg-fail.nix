({ zeta, beta, alpha }: zeta) { }
