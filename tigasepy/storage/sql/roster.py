"""Rosters in SQL (tables ``roster`` and ``roster_version``, RFC 6121 section 2, XEP-0237)."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from tigasepy.storage.database import Database
from tigasepy.storage.engines import DatabaseEngine
from tigasepy.storage.interfaces import IRosterStore, RosterItem

_COLUMNS = ("contact", "name", "subscription", "ask", "pending_in", "approved", "groups", "in_roster")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM roster"


def _item(row: tuple[Any, ...]) -> RosterItem:
    contact, name, subscription, ask, pending_in, approved, groups, in_roster = row
    return RosterItem(contact=contact, name=name, subscription=subscription, ask=bool(ask),
                      pending_in=bool(pending_in), approved=bool(approved),
                      groups=tuple(json.loads(groups or "[]")), in_roster=bool(in_roster))


def bump_version_txn(cursor: Any, engine: DatabaseEngine, owner: str) -> None:
    """Increase the roster version of ``owner`` by one (starting at 1)."""
    cursor.execute(engine.upsert("roster_version", ("owner",), ("owner", "version"),
                                 update={"version": "roster_version.version + 1"}), (owner, 1))


def get_items_txn(cursor: Any, engine: DatabaseEngine, owner: str) -> list[RosterItem]:
    """Every roster row of ``owner`` (hidden ones too), ordered by contact."""
    cursor.execute(engine.sql(_SELECT + " WHERE owner = ? ORDER BY contact"), (owner,))
    return [_item(row) for row in cursor.fetchall()]


def get_item_txn(cursor: Any, engine: DatabaseEngine, owner: str, contact: str) -> RosterItem | None:
    """The row of ``contact`` in ``owner``'s roster, or None."""
    cursor.execute(engine.sql(_SELECT + " WHERE owner = ? AND contact = ?"), (owner, contact))
    row = cursor.fetchone()
    return _item(row) if row is not None else None


def put_item_txn(cursor: Any, engine: DatabaseEngine, owner: str, item: RosterItem) -> None:
    """Insert or replace the row of ``item.contact`` and bump the roster version."""
    cursor.execute(engine.upsert("roster", ("owner", "contact"), ("owner",) + _COLUMNS), (
        owner, item.contact, item.name, item.subscription, int(item.ask), int(item.pending_in),
        int(item.approved), json.dumps(list(item.groups)), int(item.in_roster)))
    bump_version_txn(cursor, engine, owner)


def remove_item_txn(cursor: Any, engine: DatabaseEngine, owner: str, contact: str) -> bool:
    """Delete the row of ``contact``; bumps the version and returns True if it existed."""
    cursor.execute(engine.sql("DELETE FROM roster WHERE owner = ? AND contact = ?"), (owner, contact))
    removed = bool(cursor.rowcount and cursor.rowcount > 0)
    if removed:
        bump_version_txn(cursor, engine, owner)
    return removed


def get_version_txn(cursor: Any, engine: DatabaseEngine, owner: str) -> int:
    """The roster version of ``owner`` (0 before any change)."""
    cursor.execute(engine.sql("SELECT version FROM roster_version WHERE owner = ?"), (owner,))
    row = cursor.fetchone()
    return int(row[0]) if row is not None else 0


def remove_owner_txn(cursor: Any, engine: DatabaseEngine, owner: str) -> None:
    """Delete the whole roster of ``owner``.

    The version row stays and is bumped, so a client caching a version of a
    removed-and-recreated account never sees it as current.
    """
    cursor.execute(engine.sql("DELETE FROM roster WHERE owner = ?"), (owner,))
    bump_version_txn(cursor, engine, owner)


@implementer(IRosterStore)
class SqlRosterStore:
    """``IRosterStore`` in an SQL database."""

    def __init__(self, database: Database) -> None:
        """
        Args:
            database: where the tables live.
        """
        self._db = database

    def get_items(self, owner: str) -> "defer.Deferred[list[RosterItem]]":
        """See ``IRosterStore.get_items``; ordered by contact."""
        return self._db.run_interaction("get_roster", get_items_txn, self._db.engine, owner)

    def get_item(self, owner: str, contact: str) -> "defer.Deferred[RosterItem | None]":
        """See ``IRosterStore.get_item``."""
        return self._db.run_interaction("get_roster_item", get_item_txn, self._db.engine, owner, contact)

    def put_item(self, owner: str, item: RosterItem) -> "defer.Deferred[None]":
        """See ``IRosterStore.put_item``."""
        return self._db.run_interaction("put_roster_item", put_item_txn, self._db.engine, owner, item)

    def remove_item(self, owner: str, contact: str) -> "defer.Deferred[bool]":
        """See ``IRosterStore.remove_item``; fires True (and bumps the version) if it existed."""
        return self._db.run_interaction("remove_roster_item", remove_item_txn, self._db.engine,
                                        owner, contact)

    def get_version(self, owner: str) -> "defer.Deferred[int]":
        """See ``IRosterStore.get_version``."""
        return self._db.run_interaction("get_roster_version", get_version_txn, self._db.engine, owner)

    def remove_owner(self, owner: str) -> "defer.Deferred[None]":
        """See ``IRosterStore.remove_owner``."""
        return self._db.run_interaction("remove_roster", remove_owner_txn, self._db.engine, owner)
