"""Offline messages in SQL (table ``offline``; RFC 6121 8.5.2.2, XEP-0160)."""

from __future__ import annotations

from typing import Any, Sequence

from twisted.internet import defer
from zope.interface import implementer

from tigasepy.storage.database import Database
from tigasepy.storage.engines import DatabaseEngine
from tigasepy.storage.interfaces import IOfflineStore, OfflineMessage

#: Ids per DELETE statement (SQLite limits the number of bound parameters).
_DELETE_BATCH = 500


def append_txn(cursor: Any, engine: DatabaseEngine, owner: str, xml: str, stamp: float) -> int:
    """Store one message for ``owner``; returns its id (ids grow with arrival order)."""
    return engine.insert_returning_id(cursor, "offline", ("owner", "stamp", "xml"), (owner, stamp, xml))


def count_txn(cursor: Any, engine: DatabaseEngine, owner: str) -> int:
    """The number of messages stored for ``owner``."""
    cursor.execute(engine.sql("SELECT COUNT(*) FROM offline WHERE owner = ?"), (owner,))
    return int(cursor.fetchone()[0])


def fetch_txn(cursor: Any, engine: DatabaseEngine, owner: str,
              limit: int | None = None) -> list[OfflineMessage]:
    """The stored messages of ``owner``, oldest first, at most ``limit`` of them."""
    query = "SELECT id, stamp, xml FROM offline WHERE owner = ? ORDER BY id"
    params: tuple[Any, ...] = (owner,)
    if limit is not None:
        query += " LIMIT ?"
        params += (max(0, int(limit)),)
    cursor.execute(engine.sql(query), params)
    return [OfflineMessage(id=int(i), stamp=float(stamp), xml=xml) for i, stamp, xml in cursor.fetchall()]


def delete_txn(cursor: Any, engine: DatabaseEngine, owner: str, ids: Sequence[int]) -> int:
    """Remove the messages ``ids`` of ``owner``; returns how many were removed."""
    removed = 0
    ids = list(ids)
    for start in range(0, len(ids), _DELETE_BATCH):
        batch = ids[start:start + _DELETE_BATCH]
        cursor.execute(engine.sql(
            f"DELETE FROM offline WHERE owner = ? AND id IN ({engine.placeholders(len(batch))})"),
            (owner, *batch))
        removed += max(cursor.rowcount, 0)
    return removed


def remove_owner_txn(cursor: Any, engine: DatabaseEngine, owner: str) -> int:
    """Remove every message of ``owner``; returns how many were removed."""
    cursor.execute(engine.sql("DELETE FROM offline WHERE owner = ?"), (owner,))
    return max(cursor.rowcount, 0)


@implementer(IOfflineStore)
class SqlOfflineStore:
    """``IOfflineStore`` in an SQL database; ``append`` fires once the message is committed."""

    def __init__(self, database: Database) -> None:
        """
        Args:
            database: where the table lives.
        """
        self._db = database

    def append(self, owner: str, xml: str, stamp: float) -> "defer.Deferred[int]":
        """See ``IOfflineStore.append``."""
        return self._db.run_interaction("append_offline", append_txn, self._db.engine, owner, xml, stamp)

    def count(self, owner: str) -> "defer.Deferred[int]":
        """See ``IOfflineStore.count``."""
        return self._db.run_interaction("count_offline", count_txn, self._db.engine, owner)

    def fetch(self, owner: str, limit: int | None = None) -> "defer.Deferred[list[OfflineMessage]]":
        """See ``IOfflineStore.fetch``."""
        return self._db.run_interaction("fetch_offline", fetch_txn, self._db.engine, owner, limit)

    def delete(self, owner: str, ids: list[int]) -> "defer.Deferred[int]":
        """See ``IOfflineStore.delete``; fires with the number removed."""
        return self._db.run_interaction("delete_offline", delete_txn, self._db.engine, owner, list(ids))

    def remove_owner(self, owner: str) -> "defer.Deferred[int]":
        """See ``IOfflineStore.remove_owner``; fires with the number removed."""
        return self._db.run_interaction("remove_offline", remove_owner_txn, self._db.engine, owner)
