import (toString ./data/simple.nix)
