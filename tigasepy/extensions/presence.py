"""Presence subscriptions and presence exchange (RFC 6121 sections 3 and 4, 8.5 for presence).

Subscriptions: a subscription stanza from a local client is stamped with the
user's bare JID, applied to the user's roster by the appendix A rules (see
``subscription.py``), pushed to the interested resources when the visible item
changed, and routed to the contact when the rules say so. A subscription stanza
arriving for a local account is applied to that account's roster: requests are
kept as pending-in (on a hidden row for strangers) and delivered to the available
interested resources, and again to every resource that later sends initial
presence; a request from a contact already subscribed or pre-approved (3.4) is
answered ``subscribed`` by the server. Pre-approval is advertised as the
``urn:xmpp:features:pre-approval`` stream feature.

Availability: initial presence makes a resource available with its
``<priority/>`` (-128..127; anything else is ``bad-request``), is broadcast to the
contacts with a from/both subscription and to the user's available resources
(itself included), probes the contacts with a to/both subscription (from the
new resource's full JID, so that only it gets the answers; a local contact's
answer comes from its own server side, its roster and sessions), redelivers
pending subscription requests and fires ``InitialPresence``. Later presence is
broadcast the same way without probes. Directed presence is routed and its
recipients remembered, so they get ``unavailable`` when the resource goes
unavailable or its session ends, as the from/both contacts and the user's other
resources do. Probes are answered with the last presence of each available
resource when the prober has a from/both subscription, ``unavailable`` when no
resource is available, and ``unsubscribed`` when it has none (unless it has a
request pending). Presence to a bare JID goes to every available resource; to a
full JID, to that resource if it is bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.config import ConfigError
from tigasepy.extensions.subscription import (
    SUBSCRIPTION_TYPES, inbound, item_element, outbound, presence, subscribed_from, subscribed_to,
    versioned_push,
)
from tigasepy.interfaces import IExtension, Protocol
from tigasepy.log_level import Logger
from tigasepy.sm.events import (
    HANDLED, PASS, InitialPresence, PresenceFromClient, PresenceToLocal, SessionEnded, SessionEvent,
    StanzaEvent, Target,
)
from tigasepy.sm.host import ExtensionHost
from tigasepy.sm.session import NO_DIRECTED, BoundSession
from tigasepy.storage.interfaces import IRosterStore, RosterItem
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.stanza import copy_element

PRE_APPROVAL = "urn:xmpp:features:pre-approval"
"""The stream feature namespace announcing subscription pre-approval (RFC 6121 3.4)."""
_CONTENT_NAMESPACES = (None, ns.CLIENT, ns.SERVER)
_PRESENCE_TYPES = frozenset({"available", "unavailable", "probe", "error"}) | SUBSCRIPTION_TYPES
_INITIAL = "presence.initial"   # session.data key: initial presence announced but not yet broadcast


@dataclass(frozen=True)
class PresenceConfig:
    """``[extensions.presence]``: pre-approval and the limits on what others can make us keep."""

    pre_approval: bool = True
    max_pending_requests: int = 200
    max_directed: int = 1000

    def validate(self, path: tuple[str, ...]) -> None:
        """The limits must be at least 1."""
        for name in ("max_pending_requests", "max_directed"):
            if getattr(self, name) < 1:
                raise ConfigError("must be >= 1", path + (name,))


def parse_priority(stanza: domish.Element) -> int:
    """The ``<priority/>`` of a presence stanza (RFC 6121 4.7.2.3); 0 when absent.

    Raises:
        StanzaError: ``bad-request`` when it is not an integer in -128..127.
    """
    for child in stanza.elements():
        if child.name == "priority" and child.uri in _CONTENT_NAMESPACES:
            try:
                value = int(str(child).strip())
            except ValueError:
                raise StanzaError("bad-request", "The priority is not an integer") from None
            if not -128 <= value <= 127:
                raise StanzaError("bad-request", "The priority must be in -128..127")
            return value
    return 0


@implementer(IExtension)
class Presence:
    """Runs the subscription state machine and broadcasts, probes and directs presence."""

    name = "presence"
    protocols = (Protocol("RFC 6121", "sections 3-4", "complete",
                          "subscriptions with pre-approval, broadcast, probes, directed presence"),)
    config_type = PresenceConfig
    _log = Logger()

    def __init__(self, config: PresenceConfig | None, host: ExtensionHost) -> None:
        self._config = config or PresenceConfig()
        self._host = host
        self._roster = host.store(IRosterStore)
        host.hook(PresenceFromClient, self._from_client)
        host.hook(PresenceToLocal, self._to_local)
        host.hook(SessionEnded, self._session_ended)
        if self._config.pre_approval:
            host.add_stream_feature(self._stream_feature)

    def _stream_feature(self, domain: str, authenticated: bool) -> domish.Element | None:
        if not authenticated:
            return None
        return domish.Element((PRE_APPROVAL, "sub"))

    # -- from local clients -------------------------------------------------------------
    def _from_client(self, event: StanzaEvent) -> Any:
        session = event.session
        kind = event.type
        if session is None:
            return PASS
        if kind not in _PRESENCE_TYPES or event.stanza.getAttribute("type") == "available":
            session.send(StanzaError("bad-request", "Unknown presence type").to_response(event.stanza))
            return HANDLED
        to = event.to
        if kind in SUBSCRIPTION_TYPES:
            if to is None or event.target in (Target.SELF, Target.HOST) or to.userhost() == session.bare:
                return HANDLED  # a user is always subscribed to itself; a domain is no contact
            return self._host.serialized(session.bare, self._outbound_subscription, event, session, to.userhost())
        if kind in ("available", "unavailable"):
            if to is None:
                return self._broadcast_from(event, session)
            return self._directed(event, session, to)
        return PASS  # probes and errors are routed as they are

    async def _outbound_subscription(self, event: StanzaEvent, session: BoundSession, contact: str) -> Any:
        owner = session.bare
        kind = event.type
        item = await self._roster.get_item(owner, contact)
        step = outbound(item, kind, contact, pre_approval=self._config.pre_approval)
        await self._apply(owner, step.before, step.after)
        if step.push and step.after is not None:
            await versioned_push(self._host, self._roster, owner, item_element(step.after))
        if step.forward:
            stanza = copy_element(event.stanza)
            stanza["from"] = owner
            stanza["to"] = contact
            self._host.route(stanza)
        if step.share:
            self._share(owner, contact, step.share)
        return HANDLED

    def _broadcast_from(self, event: StanzaEvent, session: BoundSession) -> Any:
        stanza = copy_element(event.stanza)
        stanza["from"] = session.full
        if event.type == "unavailable":
            was_available = session.available
            directed = set(session.directed)
            session.available = False
            session.presence = None
            session.directed = NO_DIRECTED
            session.data.pop(_INITIAL, None)
            return self._withdraw(session.bare, stanza, was_available, directed, echo=session)
        try:
            priority = parse_priority(stanza)
        except StanzaError as e:
            session.send(e.to_response(event.stanza))
            return HANDLED
        if not session.available:
            session.data[_INITIAL] = True
        session.available = True
        session.priority = priority
        session.presence = stanza
        return self._announce(session, stanza)

    async def _announce(self, session: BoundSession, stanza: domish.Element) -> Any:
        """Broadcast available presence; for initial presence also probe and catch up."""
        owner = session.bare
        rows = await self._roster.get_items(owner)
        if self._host.session(session.full) is not session or session.presence is not stanza:
            return HANDLED  # the session ended or sent newer presence, which takes over
        initial = session.data.pop(_INITIAL, False)
        for other in self._host.sessions(owner):
            if other.available:
                other.send(_addressed(stanza, other.full))
        for item in rows:
            if item.in_roster and subscribed_from(item):
                self._host.route(_addressed(stanza, item.contact))
        if initial:
            for item in rows:
                if item.in_roster and subscribed_to(item):
                    self._host.route(presence("probe", session.full, item.contact))
            for item in rows:
                if item.pending_in:
                    session.send(presence("subscribe", item.contact, owner))
            self._host.notify(InitialPresence, SessionEvent(session, stanza))
        return HANDLED

    def _directed(self, event: StanzaEvent, session: BoundSession, to: JID) -> Any:
        if event.target is Target.HOST:
            return PASS
        target = to.full()
        if event.target is not Target.SELF and to.userhost() != session.bare:
            if event.type == "available":
                if target not in session.directed and len(session.directed) >= self._config.max_directed:
                    session.send(StanzaError("resource-constraint", "Too many directed presences")
                                 .to_response(event.stanza))
                    return HANDLED
                if session.directed is NO_DIRECTED:
                    session.directed = set()
                session.directed.add(target)
            elif target in session.directed:
                session.directed.discard(target)
        self._host.route(event.stanza)
        return HANDLED

    async def _withdraw(self, owner: str, stanza: domish.Element, was_available: bool,
                        directed: Iterable[str], echo: BoundSession | None = None) -> Any:
        """Send ``stanza`` (unavailable) to whoever had the resource's presence (RFC 6121 4.5.2)."""
        covered: set[str] = set()
        if was_available:
            rows = await self._roster.get_items(owner)
            recipients = [s for s in self._host.sessions(owner) if s.available or s is echo]
            for other in recipients:
                other.send(_addressed(stanza, other.full))
            for item in rows:
                if item.in_roster and subscribed_from(item):
                    covered.add(item.contact)
                    self._host.route(_addressed(stanza, item.contact))
        for jid in sorted(directed):
            if jid.split("/", 1)[0] not in covered:
                self._host.route(_addressed(stanza, jid))
        return HANDLED

    def _session_ended(self, event: SessionEvent) -> Any:
        session = event.session
        if not session.available and not session.directed:
            return None
        was_available = session.available
        directed = set(session.directed)
        session.available = False
        session.presence = None
        session.directed = NO_DIRECTED
        session.data.pop(_INITIAL, None)
        return self._withdraw(session.bare, presence("unavailable", session.full, None), was_available,
                              directed)

    def _share(self, owner: str, contact: str, kind: str) -> None:
        """Start (``available``) or stop (``unavailable``) the contact's view of the owner's resources."""
        for session in self._host.sessions(owner):
            if not session.available:
                continue
            if kind == "available" and session.presence is not None:
                self._host.route(_addressed(session.presence, contact))
            else:
                self._host.route(presence("unavailable", session.full, contact))

    # -- to local accounts --------------------------------------------------------------
    def _to_local(self, event: StanzaEvent) -> Any:
        if event.target is Target.HOST or event.to is None:
            return PASS
        kind = event.type
        owner = event.to.userhost()
        if kind in SUBSCRIPTION_TYPES:
            if event.sender is None or event.sender.userhost() == owner:
                return HANDLED
            return self._host.serialized(owner, self._inbound_subscription, event, owner,
                                   event.sender.userhost())
        if kind == "probe":
            if event.sender is None or event.sender.userhost() == owner:
                return HANDLED
            return self._probe(owner, event.sender)
        if event.target is Target.FULL:
            return PASS  # the default delivers it to that resource if it is bound
        if kind in ("available", "unavailable"):
            for session in self._host.sessions(owner):
                if session.available:
                    session.send(event.stanza)
        return HANDLED  # errors and unknown types to a bare JID are dropped

    async def _inbound_subscription(self, event: StanzaEvent, owner: str, contact: str) -> Any:
        kind = event.type
        if not await self._host.account_exists(owner):
            if kind == "subscribe":
                self._host.route(presence("unsubscribed", owner, contact))
            return HANDLED
        item = await self._roster.get_item(owner, contact)
        step = inbound(item, kind, contact)
        if item is None and step.after is not None and not step.after.in_roster:
            if await self._pending_count(owner) >= self._config.max_pending_requests:
                self._log.info("dropping a subscription request to {owner}: too many pending", owner=owner)
                return HANDLED
        await self._apply(owner, step.before, step.after)
        if step.push and step.after is not None:
            await versioned_push(self._host, self._roster, owner, item_element(step.after))
        if step.forward:
            stanza = copy_element(event.stanza)
            stanza["from"] = contact
            stanza["to"] = owner
            for session in self._host.sessions(owner):
                if session.available and (kind != "subscribe" or session.interested):
                    session.send(stanza)
        if step.reply:
            self._host.route(presence(step.reply, owner, contact))
        if step.share:
            self._share(owner, contact, step.share)
        return HANDLED

    async def _probe(self, owner: str, prober: JID) -> Any:
        contact = prober.userhost()
        reply_to = prober.full()
        if not await self._host.account_exists(owner):
            self._host.route(presence("unsubscribed", owner, contact))
            return HANDLED
        item = await self._roster.get_item(owner, contact)
        if subscribed_from(item):
            answered = False
            for session in self._host.sessions(owner):
                if session.available and session.presence is not None:
                    self._host.route(_addressed(session.presence, reply_to))
                    answered = True
            if not answered:
                self._host.route(presence("unavailable", owner, reply_to))
        elif item is None or not item.pending_in:
            self._host.route(presence("unsubscribed", owner, contact))
        return HANDLED

    # -- storage ------------------------------------------------------------------------
    async def _apply(self, owner: str, before: RosterItem | None, after: RosterItem | None) -> None:
        if before == after:
            return
        if after is not None:
            await self._roster.put_item(owner, after)
        elif before is not None:
            await self._roster.remove_item(owner, before.contact)

    async def _pending_count(self, owner: str) -> int:
        return sum(1 for row in await self._roster.get_items(owner) if not row.in_roster)


def _addressed(stanza: domish.Element, to: str) -> domish.Element:
    """A copy of ``stanza`` addressed to ``to`` (one copy per destination)."""
    out = copy_element(stanza)
    out["to"] = to
    return out
