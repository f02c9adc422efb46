mkdir -p "$XDG_CONFIG_HOME/nix" && printf '{"flakes":[{"from":{"id":"target","type":"indirect"},"to":{"path":"%s/target","type":"path"}}],"version":2}\n' "$PWD" > "$XDG_CONFIG_HOME/nix/registry.json"
