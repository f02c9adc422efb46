{ or = 1; }.or or 2
