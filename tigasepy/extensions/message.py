"""Message delivery to local accounts (RFC 6121 section 8.5).

Bare JID: the available resources with the highest non-negative priority get a
chat or normal message; headlines go to every non-negative resource; groupchat
to a bare JID is an error. With no such resource the message is undeliverable:
the ``Undeliverable`` hook (offline storage) may take it, else the sender gets
``service-unavailable``. Full JID: that resource if bound, else bare rules for
chat and normal.

Observers of ``MessageDelivered`` (carbons, archiving) learn which sessions got
each delivered message.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from tigasepy.interfaces import IExtension, Protocol
from tigasepy.sm.events import (
    HANDLED, DeliveryEvent, MessageDelivered, MessageToLocal, Outcome, StanzaEvent, Target, Undeliverable,
)
from tigasepy.sm.host import ExtensionHost
from tigasepy.xmpp.errors import StanzaError


@implementer(IExtension)
class MessageDelivery:
    """Delivers messages addressed to local accounts by the RFC 6121 rules."""

    name = "message"
    protocols = (Protocol("RFC 6121", "section 8.5", "complete", "message delivery rules"),)
    config_type = None

    def __init__(self, config: None, host: ExtensionHost) -> None:
        self._host = host
        host.hook(MessageToLocal, self._to_local, priority=-100)

    def _to_local(self, event: StanzaEvent) -> Any:
        kind = event.type
        target = event.target
        if target is Target.HOST:
            if kind in ("error", "headline"):
                return HANDLED
            raise StanzaError("service-unavailable")
        if target is Target.FULL:
            session = self._host.session(event.to.full())
            if session is not None:
                session.send(event.stanza)
                self._host.notify(MessageDelivered, DeliveryEvent(event, (session,)))
                return HANDLED
            if kind == "groupchat":
                raise StanzaError("service-unavailable")
            if kind not in ("chat", "normal"):
                return HANDLED
        return self._to_bare(event, kind)

    def _to_bare(self, event: StanzaEvent, kind: str) -> Any:
        if kind == "error":
            return HANDLED
        if kind == "groupchat":
            raise StanzaError("service-unavailable")
        bare = event.to.userhost()
        candidates = [s for s in self._host.sessions(bare) if s.available and s.priority >= 0]
        if candidates:
            if kind != "headline":
                top = max(s.priority for s in candidates)
                candidates = [s for s in candidates if s.priority == top]
            for session in candidates:
                session.send(event.stanza)
            self._host.notify(MessageDelivered, DeliveryEvent(event, tuple(candidates)))
            return HANDLED
        if kind == "headline":
            return HANDLED
        return self._undeliverable(event, bare)

    def _undeliverable(self, event: StanzaEvent, bare: str) -> defer.Deferred:
        def _exists(exists: bool) -> Any:
            if not exists:
                raise StanzaError("service-unavailable")
            return self._host.run_hooks(Undeliverable, event)

        def _outcome(outcome: Outcome) -> Outcome:
            if outcome is not HANDLED:
                raise StanzaError("service-unavailable")
            return HANDLED

        d = defer.maybeDeferred(self._host.account_exists, bare)
        d.addCallback(_exists)
        d.addCallback(_outcome)
        return d
