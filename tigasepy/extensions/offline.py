"""Offline storage (RFC 6121 8.5.2.2, XEP-0160, delay stamps per XEP-0203).

A chat or normal message for an account with no available resource is stored
with a ``<delay/>`` stamp, and delivered to the first resource that sends
initial presence with a non-negative priority; it is deleted only after it was
written to that session.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from twisted.logger import Logger
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.config import ConfigError
from tigasepy.interfaces import IExtension, Protocol
from tigasepy.sm.events import (
    HANDLED, PASS, AccountEvent, AccountRemoved, DeliveryEvent, InitialPresence, MessageDelivered,
    SessionEvent, StanzaEvent, Undeliverable,
)
from tigasepy.sm.host import ExtensionHost
from tigasepy.storage.interfaces import IOfflineStore
from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import StanzaError

_CHATSTATES = "http://jabber.org/protocol/chatstates"
# Children that alone do not make a message worth keeping: chat states, and the delay
# stamp a re-delivered message may already carry.
_NOT_CONTENT = frozenset({_CHATSTATES, ns.DELAY})
_HINTS = "urn:xmpp:hints"


@dataclass(frozen=True)
class OfflineConfig:
    """``[extensions.offline]``: how much may be kept per account."""

    max_per_user: int = 1000

    def validate(self, path: tuple[str, ...]) -> None:
        """Check the limits."""
        if self.max_per_user < 1:
            raise ConfigError("must be >= 1", path + ("max_per_user",))


def delay_stamp(seconds: float) -> str:
    """XEP-0082 date-time (UTC, millisecond precision) for ``seconds`` since the epoch."""
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def worth_storing(stanza: domish.Element) -> bool:
    """XEP-0160 / XEP-0334: keep messages with content, not bare chat states or ``no-store``."""
    has_content = False
    for child in stanza.elements():
        if child.uri == _HINTS and child.name in ("no-store", "no-permanent-store"):
            return False
        if child.uri == _HINTS and child.name == "store":
            return True
        if child.uri not in _NOT_CONTENT:
            has_content = True
    return has_content


@implementer(IExtension)
class OfflineMessages:
    """Keeps messages for accounts with no available resource and flushes them at login."""

    name = "offline"
    protocols = (Protocol("XEP-0160", "1.0.1", "complete"), Protocol("XEP-0203", "2.0", "complete"))
    config_type = OfflineConfig
    _log = Logger()

    def __init__(self, config: OfflineConfig | None, host: ExtensionHost) -> None:
        self._config = config or OfflineConfig()
        self._host = host
        self._store = host.store(IOfflineStore)
        host.add_feature("msgoffline")
        host.hook(Undeliverable, self._keep, priority=-10)
        host.hook(InitialPresence, self._flush)
        host.hook(AccountRemoved, self._forget)

    async def _keep(self, event: StanzaEvent) -> Any:
        stanza = event.stanza
        if event.type not in ("normal", "chat") or not worth_storing(stanza):
            return PASS
        owner = event.to.userhost()
        if await self._store.count(owner) >= self._config.max_per_user:
            raise StanzaError("service-unavailable", "Offline storage is full")
        now = self._host.clock.seconds()
        if not any(d.getAttribute("from") == event.to.host for d in stanza.elements(ns.DELAY, "delay")):
            # (a stanza re-delivered after a session ended already carries its original time)
            delay = stanza.addElement((ns.DELAY, "delay"))
            delay["from"] = event.to.host
            delay["stamp"] = delay_stamp(now)
        await self._store.append(owner, stanza.toXml(), now)
        self._host.notify(MessageDelivered, DeliveryEvent(event, offline=True))
        return HANDLED

    async def _flush(self, event: SessionEvent) -> None:
        session = event.session
        if session.priority < 0:
            return
        messages = await self._store.fetch(session.bare)
        if not messages:
            return
        delivered = []
        for message in messages:
            if self._host.session(session.full) is not session:
                break  # the session ended meanwhile; the rest waits for the next login
            try:
                stanza = parse_stanza(message.xml)
            except Exception:
                self._log.warn("dropping an unreadable offline message {id} of {owner}", id=message.id,
                               owner=session.bare)
                delivered.append(message.id)
                continue
            session.send(stanza)
            delivered.append(message.id)
        if delivered:
            await self._store.delete(session.bare, delivered)

    async def _forget(self, event: AccountEvent) -> None:
        await self._store.remove_owner(event.jid)
