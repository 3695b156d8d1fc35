"""XMPP Ping (XEP-0199): the server answers pings addressed to it or to the account."""

from __future__ import annotations

from zope.interface import implementer

from tigasepy.interfaces import IExtension, Protocol
from tigasepy.sm.events import StanzaEvent, Target
from tigasepy.sm.host import ExtensionHost
from tigasepy.xmpp import namespaces as ns


@implementer(IExtension)
class Ping:
    """Answers ``urn:xmpp:ping`` with an empty result."""

    name = "ping"
    protocols = (Protocol("XEP-0199", "2.0.1", "complete"),)
    config_type = None

    def __init__(self, config: None, host: ExtensionHost) -> None:
        host.add_feature(ns.PING)
        host.on_iq(ns.PING, "ping", self._pong, targets=(Target.HOST, Target.SELF))

    def _pong(self, event: StanzaEvent) -> None:
        return None
