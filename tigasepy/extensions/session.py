"""The legacy session request (RFC 3921 section 3, kept by RFC 6121 appendix E): always accepted."""

from __future__ import annotations

from zope.interface import implementer

from tigasepy.interfaces import IExtension, Protocol
from tigasepy.sm.events import StanzaEvent, Target
from tigasepy.sm.host import ExtensionHost
from tigasepy.xmpp import namespaces as ns


@implementer(IExtension)
class LegacySession:
    """Answers ``<session/>`` after binding with an empty result (older clients send it)."""

    name = "session"
    protocols = (Protocol("RFC 3921", "section 3", "complete", "session establishment, a no-op"),)
    config_type = None

    def __init__(self, config: None, host: ExtensionHost) -> None:
        host.on_iq(ns.SESSION, "session", self._established, types=("set",),
                   targets=(Target.SELF, Target.HOST))

    def _established(self, event: StanzaEvent) -> None:
        return None
