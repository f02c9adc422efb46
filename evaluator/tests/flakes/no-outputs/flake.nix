{ description = "nothing"; }
