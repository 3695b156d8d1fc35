"""Web access: RFC 7395 WebSocket, XEP-0124/0206 BOSH, XEP-0363 upload, XEP-0156 host-meta (site.py)."""
