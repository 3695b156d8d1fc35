"""Helpers for roster and presence tests over ``SMHarness``: a small world of accounts and readers
for what a fake client received (IQ replies, roster pushes, presence)."""

from __future__ import annotations

from typing import Any

from twisted.words.xish import domish

from tests.support.sm_harness import FakeClientSession, SMHarness
from tigasepy.extensions.presence import Presence, PresenceConfig
from tigasepy.extensions.roster import Roster, RosterConfig
from tigasepy.storage.interfaces import IAccountStore, IOfflineStore, IRosterStore, RosterItem
from tigasepy.storage.memory import MemoryAccountStore, MemoryOfflineStore, MemoryRosterStore
from tigasepy.xmpp import namespaces as ns

USERS = ("alice", "bob", "carol")


def make_stores(users: tuple[str, ...] = USERS) -> dict[Any, Any]:
    """Memory stores with ``users`` as accounts of example.org."""
    accounts = MemoryAccountStore()
    for user in users:
        accounts.create(f"{user}@example.org", [])
    return {IAccountStore: accounts, IRosterStore: MemoryRosterStore(), IOfflineStore: MemoryOfflineStore()}


def make_world(stores: dict[Any, Any], roster: RosterConfig | None = None,
               presence: PresenceConfig | None = None, extra: tuple[tuple[type, Any], ...] = ()) -> SMHarness:
    """A session manager with the roster and presence extensions (and ``extra``) loaded."""
    return SMHarness([(Roster, roster or RosterConfig()), (Presence, presence or PresenceConfig()), *extra],
                     stores)


def row(stores: dict[Any, Any], owner: str, contact: str) -> RosterItem | None:
    """The stored roster row of ``owner`` for ``contact``."""
    return stores[IRosterStore].get_item(owner, contact).result


def put(stores: dict[Any, Any], owner: str, item: RosterItem) -> None:
    """Store a roster row directly."""
    stores[IRosterStore].put_item(owner, item)


def login(world: SMHarness, full: str, roster: bool = True, available: bool = True,
          priority: int | None = None) -> FakeClientSession:
    """Bind ``full``, optionally fetch the roster and send initial presence; clear what it got."""
    session = world.connect(full)
    if roster:
        world.send(session, "<iq type='get' id='login-roster'><query xmlns='jabber:iq:roster'/></iq>")
    if available:
        body = f"<priority>{priority}</priority>" if priority is not None else ""
        world.send(session, f"<presence>{body}</presence>")
    session.take()
    return session


def iq(world: SMHarness, session: FakeClientSession, kind: str, payload: str, iq_id: str = "q1",
       to: str | None = None) -> domish.Element:
    """Send an IQ and return the reply with its id (leaving everything else in ``session.sent``)."""
    address = f" to='{to}'" if to else ""
    world.send(session, f"<iq type='{kind}' id='{iq_id}'{address}>{payload}</iq>")
    replies = [s for s in session.sent if s.name == "iq" and s.getAttribute("id") == iq_id
               and s.getAttribute("type") in ("result", "error")]
    assert len(replies) == 1, [s.toXml() for s in session.sent]
    session.sent.remove(replies[0])
    return replies[0]


def roster_set(world: SMHarness, session: FakeClientSession, item_xml: str, iq_id: str = "set1") -> domish.Element:
    """Send a roster set carrying ``item_xml``; returns the reply."""
    return iq(world, session, "set", f"<query xmlns='jabber:iq:roster'>{item_xml}</query>", iq_id)


def roster_items(stanza: domish.Element) -> list[dict[str, Any]]:
    """The items of a roster result or push, as attribute dicts with a ``groups`` list."""
    query = next(stanza.elements(ns.ROSTER, "query"))
    out = []
    for item in query.elements(ns.ROSTER, "item"):
        attrs = {k: v for k, v in item.attributes.items() if isinstance(k, str)}
        attrs["groups"] = [str(g) for g in item.elements(ns.ROSTER, "group")]
        out.append(attrs)
    return out


def pushes(session: FakeClientSession) -> list[dict[str, Any]]:
    """The roster items pushed to ``session`` (and forget them from ``session.sent``)."""
    found = [s for s in session.sent if s.name == "iq" and s.getAttribute("type") == "set"
             and next(s.elements(ns.ROSTER, "query"), None) is not None]
    for stanza in found:
        session.sent.remove(stanza)
    out = []
    for stanza in found:
        assert stanza["to"] == session.jid.full() and stanza.getAttribute("id")
        out.extend(roster_items(stanza))
    return out


def presences(session: FakeClientSession, kind: str | None = None) -> list[domish.Element]:
    """The presence stanzas ``session`` got (of ``kind``; "available" means untyped); forgets them."""
    found = [s for s in session.sent if s.name == "presence"
             and (kind is None or (s.getAttribute("type") or "available") == kind)]
    for stanza in found:
        session.sent.remove(stanza)
    return found


def summary(stanzas: list[domish.Element]) -> list[tuple[str, str | None, str | None]]:
    """(type, from, to) of each presence stanza, sorted, for compact assertions."""
    return sorted((s.getAttribute("type") or "available", s.getAttribute("from"), s.getAttribute("to"))
                  for s in stanzas)
