{ inherit zzz; }
