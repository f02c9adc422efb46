[ (./a + "/b") (toString ./c) "${./nonexistent-but-ok}" ]
