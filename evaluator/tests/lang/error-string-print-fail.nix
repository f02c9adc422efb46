1 + "a long string value that is displayed in the error message"
