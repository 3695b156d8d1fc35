"""Roster management (RFC 6121 section 2).

A client reads its roster with a ``jabber:iq:roster`` get, which also makes the
resource *interested*: it gets a roster push for every later change, whoever made
it (another resource, or subscription processing in the presence extension).
A roster set adds or updates one item (name and groups; the subscription state is
the server's, changed only by presence subscription stanzas), or removes it with
``subscription='remove'``: the server then cancels the subscriptions in both
directions (2.5.2) before the item is gone. Rows kept only to remember a pending
subscription request from someone not in the roster are never shown.

Roster versioning (RFC 6121 2.6, XEP-0237): the ``urn:xmpp:features:rosterver``
stream feature is offered after authentication; the version is the store's
roster version (an integer bumped on every stored change). A roster get with
``ver`` equal to the current version gets an empty result; with any other
``ver`` (``""`` included) the full roster with the current ``ver``. Every push
carries the version after its change. When an account is removed its contacts
get ``unsubscribe``/``unsubscribed`` and the roster is deleted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from twisted.words.protocols.jabber.jid import InvalidFormat
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.config import ConfigError
from tigasepy.extensions.subscription import (
    item_element, presence, removal_notices, removed_element, subscribed_from, versioned_push,
)
from tigasepy.interfaces import IExtension, Protocol
from tigasepy.log_level import Logger
from tigasepy.sm.events import AccountEvent, AccountRemoved, StanzaEvent, Target
from tigasepy.sm.host import ExtensionHost
from tigasepy.storage.interfaces import IRosterStore, RosterItem
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.jid import parse_jid
from tigasepy.xmpp.stanza import first_child

ROSTER_VERSIONING = "urn:xmpp:features:rosterver"
"""The stream feature namespace announcing roster versioning (RFC 6121 2.6.1, XEP-0237)."""


@dataclass(frozen=True)
class RosterConfig:
    """``[extensions.roster]``: how large a roster and its items may grow (RFC 6121 2.3.3)."""

    max_items: int = 1000
    max_name_length: int = 1023
    max_groups: int = 64
    max_group_length: int = 1023
    versioning: bool = True

    def validate(self, path: tuple[str, ...]) -> None:
        """Every limit must be at least 1."""
        for f in dataclasses.fields(self):
            if f.type in (bool, "bool"):
                continue
            if getattr(self, f.name) < 1:
                raise ConfigError("must be >= 1", path + (f.name,))


@dataclass(frozen=True)
class ItemUpdate:
    """A parsed and checked roster set: the contact and what the client asked for."""

    contact: str
    remove: bool = False
    name: str | None = None
    groups: tuple[str, ...] = ()


def parse_roster_set(query: domish.Element, config: RosterConfig) -> ItemUpdate:
    """Read the one ``<item/>`` of a roster set, enforcing the RFC 6121 2.3.3 rules.

    ``ask``, ``approved`` and any ``subscription`` other than ``remove`` are ignored:
    those belong to the server.

    Raises:
        StanzaError: ``bad-request`` (not exactly one item, no ``jid``, a duplicate or
            empty group, a JID with a resource), ``jid-malformed``, or ``not-acceptable``
            (a name or group beyond the configured limits).
    """
    items = [c for c in query.elements() if c.name == "item" and c.uri == ns.ROSTER]
    if len(items) != 1:
        raise StanzaError("bad-request", "A roster set carries exactly one item")
    [item] = items
    raw = item.getAttribute("jid")
    if not raw:
        raise StanzaError("bad-request", "The item has no jid")
    try:
        jid = parse_jid(raw)
    except InvalidFormat:
        raise StanzaError("jid-malformed") from None
    assert jid is not None
    if jid.resource is not None:
        raise StanzaError("bad-request", "Roster items are bare JIDs")
    contact = jid.userhost()
    if item.getAttribute("subscription") == "remove":
        return ItemUpdate(contact, remove=True)
    name = item.getAttribute("name") or None
    if name is not None and len(name) > config.max_name_length:
        raise StanzaError("not-acceptable", "The name is too long")
    groups: list[str] = []
    for group in item.elements(ns.ROSTER, "group"):
        text = str(group)
        if not text:
            raise StanzaError("bad-request", "A group name is empty")
        if len(text) > config.max_group_length:
            raise StanzaError("not-acceptable", "A group name is too long")
        if text in groups:
            raise StanzaError("bad-request", "A group is listed twice")
        groups.append(text)
    if len(groups) > config.max_groups:
        raise StanzaError("not-acceptable", "Too many groups")
    return ItemUpdate(contact, name=name, groups=tuple(groups))


@implementer(IExtension)
class Roster:
    """Answers roster gets and sets and pushes every change to the interested resources."""

    name = "roster"
    protocols = (
        Protocol("RFC 6121", "section 2", "complete", "with roster versioning (2.6)"),
        Protocol("XEP-0237", "1.3", "complete",
                 "full roster with the new version when it changed (no interim pushes); version pushes"),
    )
    config_type = RosterConfig
    _log = Logger()

    def __init__(self, config: RosterConfig | None, host: ExtensionHost) -> None:
        self._config = config or RosterConfig()
        self._host = host
        self._store = host.store(IRosterStore)
        host.on_iq(ns.ROSTER, "query", self._get, types=("get",), targets=(Target.SELF,))
        host.on_iq(ns.ROSTER, "query", self._set, types=("set",), targets=(Target.SELF,))
        host.on_iq(ns.ROSTER, "query", self._forbidden, types=("get", "set"),
                   targets=(Target.BARE, Target.FULL))
        host.hook(AccountRemoved, self._account_removed)
        if self._config.versioning:
            host.add_stream_feature(self._stream_feature)

    def _stream_feature(self, domain: str, authenticated: bool) -> domish.Element | None:
        if not authenticated:
            return None
        return domish.Element((ROSTER_VERSIONING, "ver"))

    # -- IQ handlers --------------------------------------------------------------------
    async def _get(self, event: StanzaEvent) -> domish.Element | None:
        owner = _owner(event)
        if event.session is not None:
            event.session.interested = True
        request = first_child(event.stanza)
        cached = request.getAttribute("ver") if request is not None and self._config.versioning else None
        query = domish.Element((ns.ROSTER, "query"))
        if cached is not None:
            # The version first: a change landing before the items are read then only
            # makes the client's next request fetch the full roster again.
            version = str(await self._store.get_version(owner))
            if cached == version:
                return None
            query["ver"] = version
        for item in await self._store.get_items(owner):
            if item.in_roster:
                query.addChild(item_element(item))
        return query

    def _set(self, event: StanzaEvent) -> Any:
        owner = _owner(event)
        query = first_child(event.stanza)
        if query is None:
            raise StanzaError("bad-request")
        update = parse_roster_set(query, self._config)
        if update.contact == owner:
            raise StanzaError("not-allowed", "Your own JID cannot be a roster item")
        job = self._remove if update.remove else self._add_or_update
        return self._host.serialized(owner, job, owner, update)

    def _forbidden(self, event: StanzaEvent) -> None:
        raise StanzaError("forbidden", "Only the account's own resources may use its roster")

    async def _add_or_update(self, owner: str, update: ItemUpdate) -> None:
        item = await self._store.get_item(owner, update.contact)
        if item is None or not item.in_roster:
            rows = await self._store.get_items(owner)
            if sum(1 for row in rows if row.in_roster) >= self._config.max_items:
                raise StanzaError("policy-violation", "The roster is full")
        if item is None:
            new = RosterItem(contact=update.contact, name=update.name, groups=update.groups)
        else:
            new = dataclasses.replace(item, name=update.name, groups=update.groups, in_roster=True)
        if new != item:
            await self._store.put_item(owner, new)
        await versioned_push(self._host, self._store, owner, item_element(new))

    async def _remove(self, owner: str, update: ItemUpdate) -> None:
        item = await self._store.get_item(owner, update.contact)
        if item is None or not item.in_roster:
            raise StanzaError("item-not-found")
        await self._store.remove_item(owner, update.contact)
        await versioned_push(self._host, self._store, owner, removed_element(update.contact))
        self._cancel_subscriptions(owner, item)

    # -- subscriptions ------------------------------------------------------------------
    def _cancel_subscriptions(self, owner: str, item: RosterItem) -> None:
        """Tell the contact that both directions are over (RFC 6121 2.5.2, 3.2.2, 3.3.2)."""
        for kind in removal_notices(item):
            self._host.route(presence(kind, owner, item.contact))
        if subscribed_from(item):
            for session in self._host.sessions(owner):
                if session.available:
                    self._host.route(presence("unavailable", session.full, item.contact))

    async def _account_removed(self, event: AccountEvent) -> None:
        owner = event.jid
        rows = await self._store.get_items(owner)
        for item in rows:
            self._cancel_subscriptions(owner, item)
        await self._store.remove_owner(owner)
        self._log.info("roster of {owner} removed ({count} rows)", owner=owner, count=len(rows))


def _owner(event: StanzaEvent) -> str:
    """The account whose roster a request is about (only ever its own sender's)."""
    if event.sender is None:
        raise StanzaError("forbidden")
    return event.sender.userhost()
