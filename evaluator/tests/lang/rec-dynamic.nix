let k = "key"; in rec { ${k} = 1; other = 2; }
