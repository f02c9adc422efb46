throw "something bad"
