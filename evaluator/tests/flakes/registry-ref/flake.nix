{ inputs.pinned.url = "target/main"; outputs = { self, pinned }: { x = pinned.v; }; }
