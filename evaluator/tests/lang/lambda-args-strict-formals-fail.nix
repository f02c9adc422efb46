({ a }: 1) (throw "attrset is forced")
