"""Server-to-server federation (RFC 6120; XEP-0220/0185 dialback, XEP-0178 SASL EXTERNAL,
XEP-0288 bidirectional streams, XEP-0368 direct TLS).

- ``service.py``: ``S2SService``, the router's default route and owner of every stream.
- ``incoming.py`` / ``outgoing.py``: the receiving and initiating sides of a stream;
  ``OutgoingRoute`` queues, connects and bounces for one domain pair.
- ``dialback.py``: the XEP-0185 key and the dialback elements.
- ``resolver.py``: static routes, SRV (``_xmpps-server``/``_xmpp-server``) and A/AAAA fallback.
- ``certificates.py``: s2s TLS contexts and the peer certificate check (RFC 6125).
- ``factory.py``: the listener factory.

Nothing here imports the session manager: stanzas meet it through the router.
"""
