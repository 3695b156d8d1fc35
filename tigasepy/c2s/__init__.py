"""Client-to-server connections (RFC 6120): sockets, TLS, SASL, binding and per-connection limits."""
