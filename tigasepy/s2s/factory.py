"""The listener factory for incoming server-to-server streams (STARTTLS port and XEP-0368 port).

Outgoing streams are built per connection attempt by ``outgoing.OutgoingRoute``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import protocol

from tigasepy.s2s.incoming import IncomingServerStream
from tigasepy.s2s.service import S2SService


class IncomingServerFactory(protocol.Factory):
    """Builds ``IncomingServerStream``s for one listener.

    Args:
        service: the federation service the streams report to.
        direct_tls: True for the XEP-0368 port, where TLS wraps the socket from the start.
    """

    def __init__(self, service: S2SService, direct_tls: bool = False) -> None:
        self.service = service
        self.direct_tls = direct_tls

    def buildProtocol(self, addr: Any) -> IncomingServerStream:
        return IncomingServerStream(self.service, direct_tls=self.direct_tls)
