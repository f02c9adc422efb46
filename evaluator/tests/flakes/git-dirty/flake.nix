{ outputs = { self }: { x = { d = self.dirtyRev or null; ds = self.dirtyShortRev or null; untracked = builtins.pathExists "${self}/untracked.txt"; tracked = builtins.readFile "${self}/a.txt"; }; }; }
