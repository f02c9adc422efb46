import ./data/lambda.nix
