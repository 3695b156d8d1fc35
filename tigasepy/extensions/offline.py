"""Offline storage (RFC 6121 8.5.2.2, XEP-0160, delay stamps per XEP-0203).

A chat or normal message for an account with no available resource is stored
with a ``<delay/>`` stamp, and delivered to the first resource that sends
initial presence with a non-negative priority; it is deleted only after it was
written to that session.

Flexible offline message retrieval (XEP-0013 1.3): the disco node
``http://jabber.org/protocol/offline`` of the account gives the number of
messages (disco#info) and their headers (disco#items: node and sender); the
``<offline/>`` IQ views (``<item action='view'/>``, ``<fetch/>``; fetch is
accepted in an IQ set too, as slixmpp sends it) and removes
(``<item action='remove'/>``, ``<purge/>``) messages by node. A session that used
any of this gets no automatic flush at initial presence, and neither does any
other resource of the account while it is bound. Viewing never removes. Only the
account itself may do this (``forbidden`` otherwise); an unknown node is
``item-not-found``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.config import ConfigError
from tigasepy.interfaces import IExtension, Protocol
from tigasepy.log_level import Logger
from tigasepy.sm.events import (
    HANDLED, PASS, AccountEvent, AccountRemoved, DeliveryEvent, InitialPresence, MessageDelivered,
    SessionEvent, StanzaEvent, Target, Undeliverable,
)
from tigasepy.sm.host import ExtensionHost
from tigasepy.sm.session import BoundSession
from tigasepy.storage.interfaces import IOfflineStore, OfflineMessage
from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import StanzaError

_CHATSTATES = "http://jabber.org/protocol/chatstates"
# Children that alone do not make a message worth keeping: chat states, and the delay
# stamp a re-delivered message may already carry.
_NOT_CONTENT = frozenset({_CHATSTATES, ns.DELAY})
_HINTS = "urn:xmpp:hints"
NS_OFFLINE = "http://jabber.org/protocol/offline"
#: ``BoundSession.data`` flag of a session that retrieves offline messages itself (XEP-0013).
FLEXIBLE = "offline:flexible"


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
    protocols = (Protocol("XEP-0160", "1.0.1", "complete"), Protocol("XEP-0203", "2.0", "complete"),
                 Protocol("XEP-0013", "1.3", "complete"))
    config_type = OfflineConfig
    _log = Logger()

    def __init__(self, config: OfflineConfig | None, host: ExtensionHost) -> None:
        self._config = config or OfflineConfig()
        self._host = host
        self._store = host.store(IOfflineStore)
        host.add_feature("msgoffline")
        host.add_feature(NS_OFFLINE)
        host.add_disco_node(NS_OFFLINE, info=self._node_info, items=self._node_items, target=Target.BARE)
        host.on_iq(NS_OFFLINE, "offline", self._flexible, types=("get", "set"),
                   targets=(Target.SELF, Target.BARE))
        host.hook(Undeliverable, self._keep, priority=-10)
        host.hook(InitialPresence, self._flush)
        host.hook(AccountRemoved, self._forget)

    def _keep(self, event: StanzaEvent) -> Any:
        if event.type not in ("normal", "chat") or not worth_storing(event.stanza):
            return PASS
        owner = event.to.userhost()
        # Count and append in one job per account: a burst cannot slip past the quota.
        return self._host.serialized(owner, self._store_message, event, owner)

    async def _store_message(self, event: StanzaEvent, owner: str) -> Any:
        stanza = event.stanza
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
        if any(s.data.get(FLEXIBLE) for s in self._host.sessions(session.bare)):
            return  # XEP-0013: this account retrieves its offline messages itself
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

    # -- XEP-0013 flexible offline message retrieval -------------------------------------
    def _flexible_session(self, event: StanzaEvent) -> BoundSession:
        """The requesting session of the account itself, now marked flexible; else ``forbidden``."""
        if event.target is not Target.SELF or event.session is None:
            raise StanzaError("forbidden", "only the account itself may retrieve its offline messages")
        event.session.data[FLEXIBLE] = True
        return event.session

    async def _node_info(self, event: StanzaEvent) -> domish.Element:
        session = self._flexible_session(event)
        count = await self._store.count(session.bare)
        query = domish.Element((ns.DISCO_INFO, "query"))
        identity = query.addElement("identity")
        identity["category"], identity["type"] = "automation", "message-list"
        query.addElement("feature")["var"] = NS_OFFLINE
        form = query.addElement((ns.DATA_FORMS, "x"))
        form["type"] = "result"
        for var, value, type_ in (("FORM_TYPE", NS_OFFLINE, "hidden"), ("number_of_messages", str(count), None)):
            field = form.addElement("field")
            field["var"] = var
            if type_:
                field["type"] = type_
            field.addElement("value", content=value)
        return query

    async def _node_items(self, event: StanzaEvent) -> domish.Element:
        session = self._flexible_session(event)
        query = domish.Element((ns.DISCO_ITEMS, "query"))
        for message in await self._store.fetch(session.bare):
            item = query.addElement("item")
            item["jid"] = session.bare
            item["node"] = offline_node(message)
            sender = _sender(message)
            if sender:
                item["name"] = sender
        return query

    async def _flexible(self, event: StanzaEvent) -> None:
        session = self._flexible_session(event)
        request = event.stanza.firstChildElement()
        kind = event.stanza["type"]
        commands = [c.name for c in request.elements(NS_OFFLINE) if c.name in ("fetch", "purge")]
        items = list(request.elements(NS_OFFLINE, "item"))
        actions = {item.getAttribute("action") for item in items}
        nodes = [item.getAttribute("node") or "" for item in items]
        if commands == ["fetch"] and not items:     # a get by XEP-0013, a set from some clients
            for message in await self._store.fetch(session.bare):
                self._send_flexible(session, message)
            return None
        if kind == "set" and commands == ["purge"] and not items:
            await self._store.remove_owner(session.bare)
            return None
        wanted = "view" if kind == "get" else "remove"
        if commands or not items or actions != {wanted}:
            raise StanzaError("bad-request", "use <fetch/>, <purge/>, or items to view (get) or remove (set)")
        by_node = {offline_node(m): m for m in await self._store.fetch(session.bare)}
        if any(node not in by_node for node in nodes):
            raise StanzaError("item-not-found", "no such offline message")
        if kind == "get":
            for node in dict.fromkeys(nodes):
                self._send_flexible(session, by_node[node])
        else:
            await self._store.delete(session.bare, [by_node[node].id for node in dict.fromkeys(nodes)])
        return None

    def _send_flexible(self, session: BoundSession, message: OfflineMessage) -> None:
        try:
            stanza = parse_stanza(message.xml)
        except Exception:
            self._log.warn("skipping an unreadable offline message {id} of {owner}", id=message.id,
                           owner=session.bare)
            return
        stanza.addElement((NS_OFFLINE, "offline")).addElement("item")["node"] = offline_node(message)
        session.send(stanza)


def offline_node(message: OfflineMessage) -> str:
    """The XEP-0013 node of an offline message: its UTC arrival time and its id (sorts by time)."""
    return f"{delay_stamp(message.stamp)}#{message.id:010d}"


def _sender(message: OfflineMessage) -> str | None:
    try:
        return parse_stanza(message.xml).getAttribute("from")
    except Exception:
        return None
