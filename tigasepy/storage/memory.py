"""In-memory stores: nothing survives a restart. For tests, benchmarks and ``backend = "memory"``.

They return already-fired Deferreds and are held to the same contract tests as
the SQL stores, so code tested against them behaves the same on SQLite.
"""

from __future__ import annotations

import itertools

from twisted.internet import defer
from zope.interface import implementer

from tigasepy.storage.interfaces import (
    AccountExists,
    ArchivedMessage,
    ArchivePrefs,
    ArchiveQuery,
    IAccountStore,
    IArchiveStore,
    ILastActivityStore,
    IOfflineStore,
    IPrivateStore,
    IRosterStore,
    IVCardStore,
    LastActivity,
    NoSuchAccount,
    OfflineMessage,
    RosterItem,
    ScramCredential,
    VCard,
)
from tigasepy.storage.interfaces import IPepStore, IPrivacyStore, PepItem, PrivacyItem, PrivacySettings


@implementer(IAccountStore)
class MemoryAccountStore:
    """``IAccountStore`` in a dict."""

    def __init__(self) -> None:
        """Start with no accounts."""
        self._accounts: dict[str, dict[str, ScramCredential]] = {}

    def create(self, jid: str, credentials: list[ScramCredential]) -> "defer.Deferred[None]":
        """See ``IAccountStore.create``."""
        if jid in self._accounts:
            return defer.fail(AccountExists(jid))
        self._accounts[jid] = {c.hash_name: c for c in credentials}
        return defer.succeed(None)

    def set_credentials(self, jid: str, credentials: list[ScramCredential]) -> "defer.Deferred[None]":
        """See ``IAccountStore.set_credentials``."""
        if jid not in self._accounts:
            return defer.fail(NoSuchAccount(jid))
        self._accounts[jid] = {c.hash_name: c for c in credentials}
        return defer.succeed(None)

    def get_credential(self, jid: str, hash_name: str) -> "defer.Deferred[ScramCredential | None]":
        """See ``IAccountStore.get_credential``."""
        return defer.succeed(self._accounts.get(jid, {}).get(hash_name))

    def exists(self, jid: str) -> "defer.Deferred[bool]":
        """See ``IAccountStore.exists``."""
        return defer.succeed(jid in self._accounts)

    def delete(self, jid: str) -> "defer.Deferred[bool]":
        """See ``IAccountStore.delete``."""
        return defer.succeed(self._accounts.pop(jid, None) is not None)

    def list_accounts(self, domain: str | None = None) -> "defer.Deferred[list[str]]":
        """See ``IAccountStore.list_accounts``."""
        return defer.succeed(sorted(j for j in self._accounts
                                    if domain is None or j.partition("@")[2] == domain))


@implementer(IRosterStore)
class MemoryRosterStore:
    """``IRosterStore`` in dicts."""

    def __init__(self) -> None:
        """Start with empty rosters."""
        self._rosters: dict[str, dict[str, RosterItem]] = {}
        self._versions: dict[str, int] = {}

    def _bump(self, owner: str) -> None:
        self._versions[owner] = self._versions.get(owner, 0) + 1

    def get_items(self, owner: str) -> "defer.Deferred[list[RosterItem]]":
        """See ``IRosterStore.get_items``; ordered by contact."""
        roster = self._rosters.get(owner, {})
        return defer.succeed([roster[c] for c in sorted(roster)])

    def get_item(self, owner: str, contact: str) -> "defer.Deferred[RosterItem | None]":
        """See ``IRosterStore.get_item``."""
        return defer.succeed(self._rosters.get(owner, {}).get(contact))

    def put_item(self, owner: str, item: RosterItem) -> "defer.Deferred[None]":
        """See ``IRosterStore.put_item``."""
        self._rosters.setdefault(owner, {})[item.contact] = RosterItem(
            contact=item.contact, name=item.name, subscription=item.subscription, ask=item.ask,
            pending_in=item.pending_in, approved=item.approved, groups=tuple(item.groups),
            in_roster=item.in_roster)
        self._bump(owner)
        return defer.succeed(None)

    def remove_item(self, owner: str, contact: str) -> "defer.Deferred[bool]":
        """See ``IRosterStore.remove_item``; fires True (and bumps the version) if it existed."""
        roster = self._rosters.get(owner, {})
        if contact not in roster:
            return defer.succeed(False)
        del roster[contact]
        if not roster:
            del self._rosters[owner]
        self._bump(owner)
        return defer.succeed(True)

    def get_version(self, owner: str) -> "defer.Deferred[int]":
        """See ``IRosterStore.get_version``."""
        return defer.succeed(self._versions.get(owner, 0))

    def remove_owner(self, owner: str) -> "defer.Deferred[None]":
        """See ``IRosterStore.remove_owner``; the version keeps growing."""
        self._rosters.pop(owner, None)
        self._bump(owner)
        return defer.succeed(None)


@implementer(IOfflineStore)
class MemoryOfflineStore:
    """``IOfflineStore`` in lists; ids grow across owners as in SQL."""

    def __init__(self) -> None:
        """Start with no messages."""
        self._messages: dict[str, list[OfflineMessage]] = {}
        self._ids = itertools.count(1)

    def append(self, owner: str, xml: str, stamp: float) -> "defer.Deferred[int]":
        """See ``IOfflineStore.append``."""
        message = OfflineMessage(id=next(self._ids), stamp=float(stamp), xml=xml)
        self._messages.setdefault(owner, []).append(message)
        return defer.succeed(message.id)

    def count(self, owner: str) -> "defer.Deferred[int]":
        """See ``IOfflineStore.count``."""
        return defer.succeed(len(self._messages.get(owner, ())))

    def fetch(self, owner: str, limit: int | None = None) -> "defer.Deferred[list[OfflineMessage]]":
        """See ``IOfflineStore.fetch``."""
        messages = list(self._messages.get(owner, ()))
        if limit is not None:
            messages = messages[:max(0, int(limit))]
        return defer.succeed(messages)

    def delete(self, owner: str, ids: list[int]) -> "defer.Deferred[int]":
        """See ``IOfflineStore.delete``; fires with the number removed."""
        messages = self._messages.get(owner, [])
        doomed = set(ids)
        kept = [m for m in messages if m.id not in doomed]
        removed = len(messages) - len(kept)
        if kept:
            self._messages[owner] = kept
        else:
            self._messages.pop(owner, None)
        return defer.succeed(removed)

    def remove_owner(self, owner: str) -> "defer.Deferred[int]":
        """See ``IOfflineStore.remove_owner``; fires with the number removed."""
        return defer.succeed(len(self._messages.pop(owner, [])))


@implementer(IVCardStore)
class MemoryVCardStore:
    """``IVCardStore`` in a dict."""

    def __init__(self) -> None:
        """Start with no vCards."""
        self._vcards: dict[str, VCard] = {}

    def get(self, owner: str) -> "defer.Deferred[VCard | None]":
        """See ``IVCardStore.get``."""
        return defer.succeed(self._vcards.get(owner))

    def set(self, owner: str, vcard: VCard) -> "defer.Deferred[None]":
        """See ``IVCardStore.set``."""
        self._vcards[owner] = VCard(xml=vcard.xml, photo_hash=vcard.photo_hash)
        return defer.succeed(None)

    def remove_owner(self, owner: str) -> "defer.Deferred[None]":
        """See ``IVCardStore.remove_owner``."""
        self._vcards.pop(owner, None)
        return defer.succeed(None)


@implementer(IPrivateStore)
class MemoryPrivateStore:
    """``IPrivateStore`` in dicts."""

    def __init__(self) -> None:
        """Start with nothing stored."""
        self._data: dict[str, dict[str, str]] = {}

    def get(self, owner: str, namespace: str) -> "defer.Deferred[str | None]":
        """See ``IPrivateStore.get``."""
        return defer.succeed(self._data.get(owner, {}).get(namespace))

    def set(self, owner: str, items: dict[str, str]) -> "defer.Deferred[None]":
        """See ``IPrivateStore.set``."""
        if items:
            self._data.setdefault(owner, {}).update(items)
        return defer.succeed(None)

    def namespaces(self, owner: str) -> "defer.Deferred[list[str]]":
        """See ``IPrivateStore.namespaces``."""
        return defer.succeed(sorted(self._data.get(owner, {})))

    def remove_owner(self, owner: str) -> "defer.Deferred[None]":
        """See ``IPrivateStore.remove_owner``."""
        self._data.pop(owner, None)
        return defer.succeed(None)


@implementer(ILastActivityStore)
class MemoryLastActivityStore:
    """``ILastActivityStore`` in a dict."""

    def __init__(self) -> None:
        """Start with no records."""
        self._last: dict[str, LastActivity] = {}

    def get(self, owner: str) -> "defer.Deferred[LastActivity | None]":
        """See ``ILastActivityStore.get``."""
        return defer.succeed(self._last.get(owner))

    def set(self, owner: str, activity: LastActivity) -> "defer.Deferred[None]":
        """See ``ILastActivityStore.set``."""
        self._last[owner] = LastActivity(stamp=float(activity.stamp), status=activity.status)
        return defer.succeed(None)

    def remove_owner(self, owner: str) -> "defer.Deferred[None]":
        """See ``ILastActivityStore.remove_owner``."""
        self._last.pop(owner, None)
        return defer.succeed(None)


def _bare(jid: str) -> str:
    return jid.partition("/")[0]


def _matches(message: ArchivedMessage, query: ArchiveQuery) -> bool:
    if query.with_jid is not None:
        if "/" in query.with_jid:
            if message.with_jid != query.with_jid:
                return False
        elif _bare(message.with_jid) != query.with_jid:
            return False
    if query.start is not None and message.stamp < query.start:
        return False
    if query.end is not None and message.stamp > query.end:
        return False
    if query.after_seq is not None and message.seq <= query.after_seq:
        return False
    if query.before_seq is not None and message.seq >= query.before_seq:
        return False
    if query.ids is not None and message.id not in query.ids:
        return False
    return True


@implementer(IArchiveStore)
class MemoryArchiveStore:
    """``IArchiveStore`` in lists; positions grow across owners as in SQL."""

    def __init__(self) -> None:
        """Start with empty archives."""
        self._archives: dict[str, list[ArchivedMessage]] = {}
        self._ids: dict[str, dict[str, int]] = {}      # owner -> archive id -> seq
        self._prefs: dict[str, ArchivePrefs] = {}
        self._seqs = itertools.count(1)

    def _drop(self, owner: str, gone: list[ArchivedMessage], kept: list[ArchivedMessage]) -> None:
        ids = self._ids.get(owner, {})
        for message in gone:
            ids.pop(message.id, None)
        if kept:
            self._archives[owner] = kept
        else:
            self._archives.pop(owner, None)
            self._ids.pop(owner, None)

    def append(self, owner: str, id: str, with_jid: str, stamp: float,
               xml: str) -> "defer.Deferred[int]":
        """See ``IArchiveStore.append``."""
        ids = self._ids.setdefault(owner, {})
        if id in ids:
            return defer.fail(ValueError(f"archive id {id!r} exists"))
        message = ArchivedMessage(id=id, seq=next(self._seqs), with_jid=with_jid, stamp=float(stamp), xml=xml)
        self._archives.setdefault(owner, []).append(message)
        ids[id] = message.seq
        return defer.succeed(message.seq)

    def append_many(self, rows: list[tuple[str, str, str, float, str]]) -> "defer.Deferred[int]":
        """See ``IArchiveStore.append_many``; all or nothing, as in SQL."""
        seen: set[tuple[str, str]] = set()
        for owner, id_, *_rest in rows:
            if id_ in self._ids.get(owner, ()) or (owner, id_) in seen:
                return defer.fail(ValueError(f"archive id {id_!r} exists"))
            seen.add((owner, id_))
        for owner, id_, with_jid, stamp, xml in rows:
            seq = next(self._seqs)
            self._archives.setdefault(owner, []).append(
                ArchivedMessage(id=id_, seq=seq, with_jid=with_jid, stamp=float(stamp), xml=xml))
            self._ids.setdefault(owner, {})[id_] = seq
        return defer.succeed(len(rows))

    def positions(self, owner: str, ids: list[str]) -> "defer.Deferred[dict[str, int]]":
        """See ``IArchiveStore.positions``."""
        known = self._ids.get(owner, {})
        return defer.succeed({i: known[i] for i in ids if i in known})

    def query(self, owner: str, query: ArchiveQuery, limit: int, newest_first: bool = False,
              offset: int = 0) -> "defer.Deferred[list[ArchivedMessage]]":
        """See ``IArchiveStore.query``."""
        found = [m for m in self._archives.get(owner, ()) if _matches(m, query)]
        if newest_first:
            found.reverse()
        start = max(0, int(offset))
        return defer.succeed(found[start:start + max(0, int(limit))])

    def count(self, owner: str, query: ArchiveQuery) -> "defer.Deferred[int]":
        """See ``IArchiveStore.count``."""
        return defer.succeed(sum(1 for m in self._archives.get(owner, ()) if _matches(m, query)))

    def bounds(self, owner: str) -> "defer.Deferred[tuple[ArchivedMessage, ArchivedMessage] | None]":
        """See ``IArchiveStore.bounds``."""
        archive = self._archives.get(owner)
        return defer.succeed((archive[0], archive[-1]) if archive else None)

    def trim(self, owner: str, keep: int) -> "defer.Deferred[int]":
        """See ``IArchiveStore.trim``."""
        archive = self._archives.get(owner, [])
        excess = max(0, len(archive) - max(0, int(keep)))
        if excess:
            self._drop(owner, archive[:excess], archive[excess:])
        return defer.succeed(excess)

    def expire(self, before: float) -> "defer.Deferred[int]":
        """See ``IArchiveStore.expire``."""
        removed = 0
        for owner in list(self._archives):
            archive = self._archives[owner]
            kept = [m for m in archive if m.stamp >= before]
            if len(kept) != len(archive):
                removed += len(archive) - len(kept)
                self._drop(owner, [m for m in archive if m.stamp < before], kept)
        return defer.succeed(removed)

    def get_prefs(self, owner: str) -> "defer.Deferred[ArchivePrefs | None]":
        """See ``IArchiveStore.get_prefs``."""
        return defer.succeed(self._prefs.get(owner))

    def set_prefs(self, owner: str, prefs: ArchivePrefs) -> "defer.Deferred[None]":
        """See ``IArchiveStore.set_prefs``."""
        self._prefs[owner] = ArchivePrefs(default=prefs.default, always=tuple(prefs.always),
                                          never=tuple(prefs.never))
        return defer.succeed(None)

    def remove_owner(self, owner: str) -> "defer.Deferred[int]":
        """See ``IArchiveStore.remove_owner``."""
        self._prefs.pop(owner, None)
        self._ids.pop(owner, None)
        return defer.succeed(len(self._archives.pop(owner, [])))


@implementer(IPrivacyStore)
class MemoryPrivacyStore:
    """``IPrivacyStore`` in dicts."""

    def __init__(self) -> None:
        """Start with no lists."""
        self._lists: dict[str, dict[str, tuple[PrivacyItem, ...]]] = {}
        self._defaults: dict[str, str] = {}

    def get_all(self, owner: str) -> "defer.Deferred[PrivacySettings]":
        """See ``IPrivacyStore.get_all``."""
        lists = {name: tuple(items) for name, items in self._lists.get(owner, {}).items()}
        return defer.succeed(PrivacySettings(lists=lists, default=self._defaults.get(owner)))

    def put_list(self, owner: str, name: str, items: tuple[PrivacyItem, ...],
                 make_default: bool = False) -> "defer.Deferred[None]":
        """See ``IPrivacyStore.put_list``."""
        self._lists.setdefault(owner, {})[name] = tuple(sorted(items, key=lambda i: i.order))
        if make_default:
            self._defaults[owner] = name
        return defer.succeed(None)

    def remove_list(self, owner: str, name: str) -> "defer.Deferred[bool]":
        """See ``IPrivacyStore.remove_list``."""
        lists = self._lists.get(owner, {})
        if name not in lists:
            return defer.succeed(False)
        del lists[name]
        if not lists:
            del self._lists[owner]
        if self._defaults.get(owner) == name:
            del self._defaults[owner]
        return defer.succeed(True)

    def set_default(self, owner: str, name: str | None) -> "defer.Deferred[None]":
        """See ``IPrivacyStore.set_default``."""
        if name is None:
            self._defaults.pop(owner, None)
        elif name not in self._lists.get(owner, {}):
            return defer.fail(KeyError(name))
        else:
            self._defaults[owner] = name
        return defer.succeed(None)

    def remove_owner(self, owner: str) -> "defer.Deferred[None]":
        """See ``IPrivacyStore.remove_owner``."""
        self._lists.pop(owner, None)
        self._defaults.pop(owner, None)
        return defer.succeed(None)


@implementer(IPepStore)
class MemoryPepStore:
    """``IPepStore`` in dicts (items of a node in publication order, oldest first)."""

    def __init__(self) -> None:
        """Start with no nodes."""
        self._nodes: dict[str, dict[str, dict[str, str]]] = {}
        self._items: dict[tuple[str, str], dict[str, str]] = {}

    def get_node(self, owner: str, node: str) -> "defer.Deferred[dict[str, str] | None]":
        """See ``IPepStore.get_node``."""
        config = self._nodes.get(owner, {}).get(node)
        return defer.succeed(dict(config) if config is not None else None)

    def nodes(self, owner: str) -> "defer.Deferred[list[str]]":
        """See ``IPepStore.nodes``."""
        return defer.succeed(sorted(self._nodes.get(owner, {})))

    def put_node(self, owner: str, node: str, config: dict[str, str]) -> "defer.Deferred[None]":
        """See ``IPepStore.put_node``."""
        self._nodes.setdefault(owner, {})[node] = dict(config)
        return defer.succeed(None)

    def delete_node(self, owner: str, node: str) -> "defer.Deferred[bool]":
        """See ``IPepStore.delete_node``."""
        self._items.pop((owner, node), None)
        return defer.succeed(self._nodes.get(owner, {}).pop(node, None) is not None)

    def items(self, owner: str, node: str, limit: int | None = None) -> "defer.Deferred[list[PepItem]]":
        """See ``IPepStore.items``."""
        found = [PepItem(k, v) for k, v in reversed(self._items.get((owner, node), {}).items())]
        return defer.succeed(found[:limit] if limit is not None else found)

    def get_items(self, owner: str, node: str, item_ids: list[str]) -> "defer.Deferred[list[PepItem]]":
        """See ``IPepStore.get_items``."""
        stored = self._items.get((owner, node), {})
        return defer.succeed([PepItem(i, stored[i]) for i in dict.fromkeys(item_ids) if i in stored])

    def publish(self, owner: str, node: str, item: PepItem, max_items: int | None) -> "defer.Deferred[list[str]]":
        """See ``IPepStore.publish``."""
        stored = self._items.setdefault((owner, node), {})
        stored.pop(item.item_id, None)
        stored[item.item_id] = item.xml
        dropped: list[str] = []
        if max_items is not None:
            while len(stored) > max_items:
                oldest = next(iter(stored))
                del stored[oldest]
                dropped.append(oldest)
        return defer.succeed(dropped[::-1])

    def retract(self, owner: str, node: str, item_id: str) -> "defer.Deferred[bool]":
        """See ``IPepStore.retract``."""
        return defer.succeed(self._items.get((owner, node), {}).pop(item_id, None) is not None)

    def purge(self, owner: str, node: str) -> "defer.Deferred[None]":
        """See ``IPepStore.purge``."""
        self._items.pop((owner, node), None)
        return defer.succeed(None)

    def remove_owner(self, owner: str) -> "defer.Deferred[None]":
        """See ``IPepStore.remove_owner``."""
        self._nodes.pop(owner, None)
        for key in [k for k in self._items if k[0] == owner]:
            del self._items[key]
        return defer.succeed(None)
