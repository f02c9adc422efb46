[ (/foo + "/bar") (/foo + "bar") ("/x" + /y) ]
