assert ./foo == 1.5 || null == true; 1
