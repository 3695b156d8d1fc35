"""Web access: RFC 7395 WebSocket, XEP-0124/0206 BOSH, XEP-0363 upload, XEP-0156 host-meta (site.py)."""

from tigasepy.interfaces import Protocol

#: What the [http] listener implements (tigasepy.doap lists the same versions).
PROTOCOLS = (
    Protocol("RFC 7395", "", "complete"),
    Protocol("XEP-0124", "1.11.2", "complete"),
    Protocol("XEP-0156", "1.4.0", "complete"),
    Protocol("XEP-0206", "1.4", "complete"),
    Protocol("XEP-0363", "1.2.0", "complete"),
)
