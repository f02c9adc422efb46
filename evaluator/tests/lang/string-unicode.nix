[ "héllo" "日本語" "emoji 🎉" (builtins.stringLength "日本語") ]
