"x${null}"
