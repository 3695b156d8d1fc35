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
    IAccountStore,
    IOfflineStore,
    IRosterStore,
    NoSuchAccount,
    OfflineMessage,
    RosterItem,
    ScramCredential,
)


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
