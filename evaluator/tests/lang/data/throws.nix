{ ok = 1; bad = throw "thrown from imported file"; }
