with throw "needed"; x
