with throw "not needed"; 5
