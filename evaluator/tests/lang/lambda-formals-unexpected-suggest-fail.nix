({ name, value }: name) { name = 1; valeu = 2; value = 3; vale = 4; }
