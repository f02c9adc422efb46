[ http://example.org/foo https://x.y/z?a=b&c=d mailto:user@example.com ]
