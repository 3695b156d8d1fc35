"""Privacy lists (XEP-0016) and the blocking command (XEP-0191), enforced on the server.

One store (``IPrivacyStore``) serves both protocols, as XEP-0191 section 4 asks: the
blocklist is the set of ``jid``/``deny`` items naming no stanza kind in the
account's *default* privacy list. Blocking a JID adds such items first in the
default list (creating a list named ``blocklist`` and making it the default when
the account has none); unblocking removes them (and removes that list when
nothing is left in it). A privacy-list client editing the default list changes
the blocklist too, and blocklist clients get pushes for it.

Enforcement runs in the SM filter stage for every stanza kind:

- ``InboundFilter``: a stanza from another entity for the account is checked
  against the list that applies (the addressed session's active list, else the
  default list; for a bare-JID stanza while some session has an active list, it
  passes when any bound session's list allows it). Denied: presence is dropped
  silently, a message gets ``service-unavailable`` (unless it is an error), an IQ
  get/set gets ``service-unavailable`` and other IQs are dropped (XEP-0016 2.13,
  XEP-0191 3.3). So the blocked entity's stanzas reach no resource and no
  offline storage.
- ``OutboundFilter``: a stanza the account sends to another entity, from its
  client or on its behalf (presence broadcasts, probe answers, subscription
  replies) is checked against the sending session's active list or the default
  list. Denied from a client: ``not-acceptable`` (with XEP-0191's ``<blocked/>``
  when a blocklist item denied it); denied on its behalf: dropped. Error stanzas
  the server sends on the account's behalf always pass, so the blocked entity
  gets its ``service-unavailable``.

When a change makes a list deny or allow presence to or from a contact for an
available session, the contact gets ``unavailable`` or the current presence
(XEP-0191 3.3, 3.4; XEP-0016 2.11), and the session gets ``unavailable`` on the
contact's behalf or a probe is sent for it (XEP-0016 2.10).

Privacy list pushes (``<list name/>``) go to the resources that used
``jabber:iq:privacy`` in their session, like roster pushes go to interested
resources; blocking pushes go to the resources that asked for the blocklist.

Each account's lists are cached (bounded LRU, ``cache_size`` accounts) and loaded
when a session binds or the first stanza needs them; every change goes through
this extension, so the cache is exact within one server process. Lists with
``group`` or ``subscription`` items read the roster row of the peer per stanza
(in order, per account).
"""

from __future__ import annotations

import secrets
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.config import ConfigError
from tigasepy.extensions.privacy_rules import (
    BLOCKING, PRIVACY, UNDECIDED, CompiledList, RosterView, blocked_error, blocked_jids, blocking_element,
    blocking_jids, inbound_kind, is_block_item, item_element, outbound_kind, parse_list, peer_forms,
    with_blocks, without_blocks,
)
from tigasepy.extensions.subscription import presence, subscribed_from, subscribed_to
from tigasepy.interfaces import IExtension, Protocol
from tigasepy.log_level import Logger
from tigasepy.sm.events import (
    HANDLED, PASS, AccountEvent, AccountRemoved, InboundFilter, OutboundFilter, SessionBound, SessionEvent,
    StanzaEvent, Target,
)
from tigasepy.sm.host import ExtensionHost
from tigasepy.sm.queue import OwnerQueue
from tigasepy.sm.session import BoundSession
from tigasepy.storage.interfaces import IPrivacyStore, IRosterStore, PrivacyItem, PrivacySettings
from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.stanza import copy_element, element_children, first_child

ACTIVE = "privacy.active"                 # session.data: the name of the session's active list
PRIVACY_USER = "privacy.used"             # session.data: the session used jabber:iq:privacy
BLOCKLIST_READER = "blocking.interested"  # session.data: the session asked for the blocklist
BLOCKLIST_NAME = "blocklist"              # the default list the blocking command creates


@dataclass(frozen=True)
class PrivacyConfig:
    """``[extensions.privacy]``: which protocols are offered, and the limits per account."""

    blocking: bool = True
    privacy_lists: bool = True
    max_lists: int = 32
    max_items: int = 1000
    max_name_length: int = 255
    cache_size: int = 10000

    def validate(self, path: tuple[str, ...]) -> None:
        """The limits must be at least 1, and at least one protocol offered."""
        for name in ("max_lists", "max_items", "max_name_length", "cache_size"):
            if getattr(self, name) < 1:
                raise ConfigError("must be >= 1", path + (name,))
        if not (self.blocking or self.privacy_lists):
            raise ConfigError("enable blocking or privacy_lists (or disable the extension)",
                              path + ("blocking",))


class _Account:
    """One account's lists as cached: the settings and their compiled lists."""

    __slots__ = ("lists", "default", "_compiled")

    def __init__(self, settings: PrivacySettings) -> None:
        self.lists: dict[str, tuple[PrivacyItem, ...]] = dict(settings.lists)
        self.default: str | None = settings.default if settings.default in settings.lists else None
        self._compiled: dict[str, CompiledList] = {}

    def compiled(self, name: str | None) -> CompiledList | None:
        """List ``name`` ready to evaluate, or None (no such list)."""
        if name is None:
            return None
        found = self._compiled.get(name)
        if found is None:
            items = self.lists.get(name)
            if items is None:
                return None
            found = self._compiled[name] = CompiledList(items)
        return found

    def blocked(self) -> list[str]:
        """The blocklist: the blocked JIDs of the default list."""
        return blocked_jids(self.lists.get(self.default, ())) if self.default else []


@implementer(IExtension)
class Privacy:
    """Answers ``jabber:iq:privacy`` and ``urn:xmpp:blocking`` requests and enforces the lists."""

    name = "privacy"
    protocols = (
        Protocol("XEP-0191", "1.3", "complete",
                 "blocklist kept in the default privacy list (section 4)"),
        Protocol("XEP-0016", "1.7", "complete",
                 "pushes go to resources that used privacy lists; a bare-JID stanza passes when "
                 "any bound session's list allows it"),
    )
    config_type = PrivacyConfig
    _log = Logger()

    def __init__(self, config: PrivacyConfig | None, host: ExtensionHost) -> None:
        self._config = config or PrivacyConfig()
        self._host = host
        self._store = host.store(IPrivacyStore)
        self._roster = host.store(IRosterStore)
        self._cache: OrderedDict[str, _Account] = OrderedDict()
        self._loading: dict[str, list[defer.Deferred]] = {}
        self._lookups = OwnerQueue()   # per-account order for evaluations that read the roster
        self._exempt: weakref.WeakSet[domish.Element] = weakref.WeakSet()
        if self._config.privacy_lists:
            host.add_feature(PRIVACY)
            host.on_iq(PRIVACY, "query", self._privacy_get, types=("get",), targets=(Target.SELF,))
            host.on_iq(PRIVACY, "query", self._privacy_set, types=("set",), targets=(Target.SELF,))
            host.on_iq(PRIVACY, "query", _forbidden, types=("get", "set"), targets=(Target.BARE, Target.FULL))
        if self._config.blocking:
            host.add_feature(BLOCKING)
            host.on_iq(BLOCKING, "blocklist", self._blocklist, types=("get",), targets=(Target.SELF,))
            host.on_iq(BLOCKING, "block", self._block, types=("set",), targets=(Target.SELF,))
            host.on_iq(BLOCKING, "unblock", self._unblock, types=("set",), targets=(Target.SELF,))
            for name in ("blocklist", "block", "unblock"):
                host.on_iq(BLOCKING, name, _forbidden, types=("get", "set"), targets=(Target.BARE, Target.FULL))
        host.hook(InboundFilter, self._inbound, priority=100)
        host.hook(OutboundFilter, self._outbound, priority=100)
        host.hook(SessionBound, self._session_bound)
        host.hook(AccountRemoved, self._account_removed)
        host.on_close(self._cache.clear)

    # -- the cache ----------------------------------------------------------------------
    def _state(self, owner: str) -> "_Account | defer.Deferred[_Account]":
        """The cached lists of ``owner``, or a Deferred of them while they load."""
        state = self._cache.get(owner)
        if state is not None:
            self._cache.move_to_end(owner)
            return state
        mine: defer.Deferred[_Account] = defer.Deferred()
        waiters = self._loading.get(owner)
        if waiters is not None:
            waiters.append(mine)
            return mine
        waiters = self._loading[owner] = [mine]
        d = self._store.get_all(owner)
        d.addCallbacks(lambda settings: self._loaded(owner, waiters, settings),
                       lambda failure: self._load_failed(owner, waiters, failure))
        return mine

    def _loaded(self, owner: str, waiters: list[defer.Deferred], settings: PrivacySettings) -> None:
        state = _Account(settings)
        if self._loading.get(owner) is waiters:
            del self._loading[owner]
            self._remember(owner, state)
        else:
            state = self._cache.get(owner, state)   # a change stored meanwhile wins
        for waiter in waiters:
            waiter.callback(state)

    def _load_failed(self, owner: str, waiters: list[defer.Deferred], failure: Any) -> None:
        if self._loading.get(owner) is waiters:
            del self._loading[owner]
        for waiter in waiters:
            waiter.errback(failure)

    def _remember(self, owner: str, state: _Account) -> None:
        self._cache[owner] = state
        self._cache.move_to_end(owner)
        while len(self._cache) > self._config.cache_size:
            self._cache.popitem(last=False)

    def _stored(self, owner: str, state: _Account) -> None:
        """Record a change already written to the store (loads in flight are stale)."""
        self._loading.pop(owner, None)
        self._remember(owner, state)

    async def _current(self, owner: str) -> _Account:
        state = self._state(owner)
        if isinstance(state, defer.Deferred):
            return await state
        return state

    def _with_state(self, owner: str, then: Callable[[_Account], Any]) -> Any:
        state = self._state(owner)
        if isinstance(state, defer.Deferred):
            return state.addCallback(then)
        return then(state)

    # -- enforcement --------------------------------------------------------------------
    def _inbound(self, event: StanzaEvent) -> Any:
        to, sender = event.to, event.sender
        if to is None or sender is None:   # the SM filters only stanzas with both
            return PASS
        owner = to.userhost()
        return self._with_state(owner, lambda state: self._check_inbound(event, owner, to, sender, state))

    def _check_inbound(self, event: StanzaEvent, owner: str, to: JID, sender: JID, state: _Account) -> Any:
        if not state.lists:
            return PASS
        names = self._inbound_lists(owner, state, to)
        if names is None:
            return PASS
        return self._decide(owner, state, names, inbound_kind(event.stanza), sender,
                            lambda item: self._deny_inbound(event))

    def _inbound_lists(self, owner: str, state: _Account, to: JID) -> list[str] | None:
        """The names of the lists that decide for a stanza to ``to`` (None: nothing applies)."""
        if to.resource is not None:
            session = self._host.session(to.full())
            names = [session.data.get(ACTIVE) or state.default] if session is not None else [state.default]
        else:
            sessions = self._host.sessions(owner)
            if not any(s.data.get(ACTIVE) for s in sessions):
                names = [state.default]
            else:
                names = list(dict.fromkeys(s.data.get(ACTIVE) or state.default for s in sessions))
        if any(name is None for name in names):
            return None
        return names  # type: ignore[return-value]

    def _outbound(self, event: StanzaEvent) -> Any:
        stanza = event.stanza
        if event.session is None and (stanza.getAttribute("type") == "error" or stanza in self._exempt):
            return PASS
        to, sender = event.to, event.sender
        if to is None or sender is None:   # the SM filters only stanzas with both
            return PASS
        owner = sender.userhost()
        return self._with_state(owner, lambda state: self._check_outbound(event, owner, to, sender, state))

    def _check_outbound(self, event: StanzaEvent, owner: str, to: JID, sender: JID, state: _Account) -> Any:
        if not state.lists:
            return PASS
        session = event.session or (self._host.session(sender.full()) if sender.resource is not None else None)
        name = (session.data.get(ACTIVE) if session is not None else None) or state.default
        if name is None:
            return PASS
        return self._decide(owner, state, [name], outbound_kind(event.stanza), to,
                            lambda item: self._deny_outbound(event, item))

    def _decide(self, owner: str, state: _Account, names: list[str], kind: str | None, peer: JID,
                deny: Callable[[PrivacyItem], Any]) -> Any:
        """Deny (``deny(item)``) when every list named denies; read the roster only if needed."""
        lists = [state.compiled(name) for name in names]
        if any(cl is None for cl in lists):
            return PASS
        forms = peer_forms(peer)
        verdicts = [cl.match(kind, forms) for cl in lists]  # type: ignore[union-attr]
        if UNDECIDED not in verdicts:
            return _verdict(verdicts, deny)

        async def with_roster() -> Any:
            row = await self._roster.get_item(owner, peer.userhost())
            view = RosterView.of(row)
            return _verdict([cl.match(kind, forms, view) for cl in lists], deny)  # type: ignore[union-attr]

        return self._lookups.run(owner, with_roster)

    def _deny_inbound(self, event: StanzaEvent) -> Any:
        stanza = event.stanza
        kind = stanza.getAttribute("type")
        if stanza.name == "message" and kind != "error":
            raise StanzaError("service-unavailable")
        if stanza.name == "iq" and kind in ("get", "set"):
            raise StanzaError("service-unavailable")
        return HANDLED

    def _deny_outbound(self, event: StanzaEvent, item: PrivacyItem) -> Any:
        if event.session is None or event.stanza.getAttribute("type") in ("error", "result"):
            return HANDLED
        raise StanzaError("not-acceptable", error_type="cancel",
                          app_condition=blocked_error() if is_block_item(item) else None)

    # -- session and account life cycle -------------------------------------------------
    def _session_bound(self, event: SessionEvent) -> None:
        state = self._state(event.session.bare)   # load now, so the client's stanzas never wait
        if isinstance(state, defer.Deferred):
            state.addErrback(lambda f: self._log.failure("loading privacy lists failed", f))

    async def _account_removed(self, event: AccountEvent) -> None:
        await self._store.remove_owner(event.jid)
        self._cache.pop(event.jid, None)
        self._loading.pop(event.jid, None)

    # -- jabber:iq:privacy --------------------------------------------------------------
    async def _privacy_get(self, event: StanzaEvent) -> domish.Element:
        owner = _owner(event)
        session = _session(event)
        session.data[PRIVACY_USER] = True
        query = first_child(event.stanza)
        children = element_children(query) if query is not None else []
        state = await self._current(owner)
        result = domish.Element((PRIVACY, "query"))
        if not children:
            active = session.data.get(ACTIVE)
            if active is not None and active in state.lists:
                result.addElement("active")["name"] = active
            if state.default is not None:
                result.addElement("default")["name"] = state.default
            for name in sorted(state.lists):
                result.addElement("list")["name"] = name
            return result
        if len(children) != 1 or children[0].name != "list" or not children[0].getAttribute("name"):
            raise StanzaError("bad-request", "Ask for one list at a time")
        name = children[0]["name"]
        if name not in state.lists:
            raise StanzaError("item-not-found")
        element = result.addElement("list")
        element["name"] = name
        for item in state.lists[name]:
            element.addChild(item_element(item))
        return result

    def _privacy_set(self, event: StanzaEvent) -> Any:
        owner = _owner(event)
        session = _session(event)
        session.data[PRIVACY_USER] = True
        query = first_child(event.stanza)
        children = element_children(query) if query is not None else []
        if len(children) != 1 or children[0].name not in ("active", "default", "list"):
            raise StanzaError("bad-request", "A privacy set carries one active, default or list element")
        [child] = children
        name = child.getAttribute("name")
        if name is not None and not 0 < len(name) <= self._config.max_name_length:
            raise StanzaError("bad-request", "A list name must be 1 to "
                              f"{self._config.max_name_length} characters")
        if child.name == "active":
            return self._host.serialized(owner, self._set_active, owner, session, name)
        if child.name == "default":
            return self._host.serialized(owner, self._set_default, owner, session, name)
        if name is None:
            raise StanzaError("bad-request", "A list needs a name")
        if not any(c.name == "item" for c in child.elements()):
            return self._host.serialized(owner, self._remove_list, owner, session, name)
        items = parse_list(child, self._config.max_items)
        return self._host.serialized(owner, self._put_list, owner, name, items)

    async def _set_active(self, owner: str, session: BoundSession, name: str | None) -> None:
        state = await self._current(owner)
        if name is not None and name not in state.lists:
            raise StanzaError("item-not-found")
        before = self._applying(owner, state)
        if name is None:
            session.data.pop(ACTIVE, None)
        else:
            session.data[ACTIVE] = name
        await self._presence_effects(owner, before, self._applying(owner, state))

    async def _set_default(self, owner: str, session: BoundSession, name: str | None) -> None:
        state = await self._current(owner)
        if name is not None and name not in state.lists:
            raise StanzaError("item-not-found")
        if name == state.default:
            return
        if state.default is not None and self._default_in_use(owner, session):
            raise StanzaError("conflict", "The default list applies to another resource")
        await self._store.set_default(owner, name)
        new = _Account(PrivacySettings(lists=state.lists, default=name))
        await self._changed(owner, state, new)

    async def _put_list(self, owner: str, name: str, items: tuple[PrivacyItem, ...]) -> None:
        state = await self._current(owner)
        if name not in state.lists and len(state.lists) >= self._config.max_lists:
            raise StanzaError("policy-violation", f"At most {self._config.max_lists} lists")
        groups = {item.value for item in items if item.type == "group"}
        if groups:
            known = {g for row in await self._roster.get_items(owner) if row.in_roster for g in row.groups}
            if groups - known:
                raise StanzaError("item-not-found", "No such roster group")
        await self._store.put_list(owner, name, items)
        new = _Account(PrivacySettings(lists={**state.lists, name: items}, default=state.default))
        await self._changed(owner, state, new, pushed=name)

    async def _remove_list(self, owner: str, session: BoundSession, name: str) -> None:
        state = await self._current(owner)
        if name not in state.lists:
            raise StanzaError("item-not-found")
        for other in self._host.sessions(owner):
            if other is session:
                continue
            if other.data.get(ACTIVE) == name or (name == state.default and not other.data.get(ACTIVE)):
                raise StanzaError("conflict", "The list applies to another resource")
        before = self._applying(owner, state)
        await self._store.remove_list(owner, name)
        if session.data.get(ACTIVE) == name:
            session.data.pop(ACTIVE, None)
        lists = {k: v for k, v in state.lists.items() if k != name}
        new = _Account(PrivacySettings(lists=lists, default=None if state.default == name else state.default))
        await self._changed(owner, state, new, pushed=name, before=before)

    def _default_in_use(self, owner: str, sender: BoundSession) -> bool:
        """True when the default list applies to a connected resource other than ``sender``."""
        return any(s is not sender and not s.data.get(ACTIVE) for s in self._host.sessions(owner))

    # -- urn:xmpp:blocking --------------------------------------------------------------
    async def _blocklist(self, event: StanzaEvent) -> domish.Element:
        owner = _owner(event)
        _session(event).data[BLOCKLIST_READER] = True
        state = await self._current(owner)
        return blocking_element("blocklist", state.blocked())

    def _block(self, event: StanzaEvent) -> Any:
        owner = _owner(event)
        _session(event)
        query = first_child(event.stanza)
        jids = blocking_jids(query) if query is not None else []
        if not jids:
            raise StanzaError("bad-request", "Block at least one JID")
        return self._host.serialized(owner, self._do_block, owner, jids)

    def _unblock(self, event: StanzaEvent) -> Any:
        owner = _owner(event)
        _session(event)
        query = first_child(event.stanza)
        jids = blocking_jids(query) if query is not None else []
        return self._host.serialized(owner, self._do_unblock, owner, jids or None)

    async def _do_block(self, owner: str, jids: list[str]) -> None:
        state = await self._current(owner)
        name = state.default
        created = name is None
        if name is None:
            name = _free_name(state.lists)
            if len(state.lists) >= self._config.max_lists:
                raise StanzaError("policy-violation", f"At most {self._config.max_lists} lists")
        items = with_blocks(state.lists.get(name, ()), jids)
        if len(items) > self._config.max_items:
            raise StanzaError("policy-violation", f"At most {self._config.max_items} blocked JIDs")
        await self._store.put_list(owner, name, items, make_default=created)
        new = _Account(PrivacySettings(lists={**state.lists, name: items}, default=name))
        await self._changed(owner, state, new, pushed=name, blocking=("block", jids))

    async def _do_unblock(self, owner: str, jids: list[str] | None) -> None:
        state = await self._current(owner)
        name = state.default
        if name is None:
            self._push_blocking(owner, blocking_element("unblock", jids or ()))
            return
        items = without_blocks(state.lists[name], jids)
        lists = dict(state.lists)
        default: str | None = name
        in_use = any(s.data.get(ACTIVE) == name for s in self._host.sessions(owner))
        if not items and not in_use:
            await self._store.remove_list(owner, name)
            del lists[name]
            default = None
        else:
            await self._store.put_list(owner, name, items)
            lists[name] = items
        new = _Account(PrivacySettings(lists=lists, default=default))
        await self._changed(owner, state, new, pushed=name, blocking=("unblock", jids or []))

    # -- after a change -----------------------------------------------------------------
    async def _changed(self, owner: str, old: _Account, new: _Account, pushed: str | None = None,
                       blocking: tuple[str, list[str]] | None = None,
                       before: dict[BoundSession, CompiledList | None] | None = None) -> None:
        """Cache ``new`` (already stored), push it and apply its presence effects."""
        if before is None:
            before = self._applying(owner, old)
        self._stored(owner, new)
        if pushed is not None:
            query = domish.Element((PRIVACY, "query"))
            query.addElement("list")["name"] = pushed
            self._push(owner, query, lambda s: bool(s.data.get(PRIVACY_USER)))
        if blocking is not None:
            self._push_blocking(owner, blocking_element(*blocking))
        else:
            was, now = old.blocked(), new.blocked()
            added = [jid for jid in now if jid not in was]
            removed = [jid for jid in was if jid not in now]
            if added:
                self._push_blocking(owner, blocking_element("block", added))
            if removed:
                self._push_blocking(owner, blocking_element("unblock", removed))
        await self._presence_effects(owner, before, self._applying(owner, new))

    def _applying(self, owner: str, state: _Account) -> dict[BoundSession, CompiledList | None]:
        """The list that applies to each available session of ``owner``."""
        return {s: state.compiled(s.data.get(ACTIVE) or state.default)
                for s in self._host.sessions(owner) if s.available}

    async def _presence_effects(self, owner: str, before: dict[BoundSession, CompiledList | None],
                                after: dict[BoundSession, CompiledList | None]) -> None:
        """Withdraw or restore presence where a list now denies or allows it (both ways)."""
        changed = [(s, before.get(s), a) for s, a in after.items()
                   if _items(before.get(s)) != _items(a)]
        if not changed:
            return
        rows = await self._roster.get_items(owner)
        views = {row.contact: RosterView.of(row) for row in rows}
        for session, old, new in changed:
            if not session.available or self._host.session(session.full) is not session:
                continue
            covered = set()
            for row in rows:
                if not row.in_roster:
                    continue
                contact = _jid(row.contact)
                if contact is None:
                    continue
                view = views[row.contact]
                if subscribed_from(row):
                    covered.add(row.contact)
                    self._presence_out(session, row.contact, _denies(old, "presence-out", contact, view),
                                       _denies(new, "presence-out", contact, view))
                if subscribed_to(row):
                    was = _denies(old, "presence-in", contact, view)
                    now = _denies(new, "presence-in", contact, view)
                    if now and not was:
                        session.send(presence("unavailable", row.contact, session.full))
                    elif was and not now:
                        self._host.route(presence("probe", session.full, row.contact))
            for target in sorted(session.directed):
                jid = _jid(target)
                if jid is None or jid.userhost() in covered:
                    continue
                view = views.get(jid.userhost(), RosterView())
                if _denies(new, "presence-out", jid, view) and not _denies(old, "presence-out", jid, view):
                    self._send_exempt(presence("unavailable", session.full, target))

    def _presence_out(self, session: BoundSession, contact: str, was: bool, now: bool) -> None:
        if now and not was:
            self._send_exempt(presence("unavailable", session.full, contact))
        elif was and not now and session.presence is not None:
            stanza = copy_element(session.presence)
            stanza["from"] = session.full
            stanza["to"] = contact
            self._host.route(stanza)

    def _send_exempt(self, stanza: domish.Element) -> None:
        """Route a stanza the lists must not stop (the unavailable that announces a block)."""
        self._exempt.add(stanza)
        self._host.route(stanza)

    def _push(self, owner: str, payload: domish.Element, wanted: Callable[[BoundSession], bool]) -> None:
        for session in self._host.sessions(owner):
            if not wanted(session):
                continue
            iq = domish.Element((None, "iq"))
            iq["type"] = "set"
            iq["id"] = "push-" + secrets.token_hex(6)
            iq["to"] = session.full
            iq.addChild(copy_element(payload))
            session.send(iq)

    def _push_blocking(self, owner: str, payload: domish.Element) -> None:
        if self._config.blocking:
            self._push(owner, payload, lambda s: bool(s.data.get(BLOCKLIST_READER)))


def _verdict(verdicts: Iterable[Any], deny: Callable[[PrivacyItem], Any]) -> Any:
    """Deny when every verdict is a deny item (the first one names the reason)."""
    verdicts = list(verdicts)
    if verdicts and all(isinstance(v, PrivacyItem) and v.action == "deny" for v in verdicts):
        return deny(verdicts[0])
    return PASS


def _denies(compiled: CompiledList | None, kind: str, jid: JID, view: RosterView) -> bool:
    return compiled is not None and compiled.denies(kind, jid, view)


def _items(compiled: CompiledList | None) -> tuple[PrivacyItem, ...]:
    return compiled.items if compiled is not None else ()


def _jid(text: str) -> JID | None:
    try:
        return JID(text)
    except InvalidFormat:
        return None


def _free_name(lists: dict[str, Any]) -> str:
    name, n = BLOCKLIST_NAME, 1
    while name in lists:
        n += 1
        name = f"{BLOCKLIST_NAME}-{n}"
    return name


def _owner(event: StanzaEvent) -> str:
    if event.sender is None:
        raise StanzaError("forbidden")
    return event.sender.userhost()


def _session(event: StanzaEvent) -> BoundSession:
    if event.session is None:
        raise StanzaError("forbidden")
    return event.session


def _forbidden(event: StanzaEvent) -> None:
    raise StanzaError("forbidden", "Only the account's own resources may manage its lists")
