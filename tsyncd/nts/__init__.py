"""Network Time Security (RFC 8915): AEADs, cookies, KE and per-packet protection (sans-IO)."""
