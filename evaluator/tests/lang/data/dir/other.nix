"other"
