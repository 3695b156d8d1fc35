"""Message archives in SQL (tables ``archive`` and ``archive_prefs``; XEP-0313, XEP-0441)."""

from __future__ import annotations

import json
from typing import Any, Sequence

from twisted.internet import defer
from zope.interface import implementer

from tigasepy.storage.database import Database
from tigasepy.storage.engines import DatabaseEngine
from tigasepy.storage.interfaces import ArchivedMessage, ArchivePrefs, ArchiveQuery, IArchiveStore

#: Ids per ``IN (...)`` list (SQLite limits the number of bound parameters).
_ID_BATCH = 500

_SELECT = "SELECT id, seq, with_full, stamp, xml FROM archive"


def _message(row: tuple[Any, ...]) -> ArchivedMessage:
    id_, seq, with_full, stamp, xml = row
    return ArchivedMessage(id=id_, seq=int(seq), with_jid=with_full, stamp=float(stamp), xml=xml)


def _where(owner: str, query: ArchiveQuery) -> tuple[str, list[Any]]:
    clauses = ["owner = ?"]
    params: list[Any] = [owner]
    if query.with_jid is not None:
        clauses.append("with_full = ?" if "/" in query.with_jid else "with_bare = ?")
        params.append(query.with_jid)
    if query.start is not None:
        clauses.append("stamp >= ?")
        params.append(float(query.start))
    if query.end is not None:
        clauses.append("stamp <= ?")
        params.append(float(query.end))
    if query.after_seq is not None:
        clauses.append("seq > ?")
        params.append(int(query.after_seq))
    if query.before_seq is not None:
        clauses.append("seq < ?")
        params.append(int(query.before_seq))
    if query.ids is not None:
        ids = list(dict.fromkeys(query.ids))
        if not ids:
            clauses.append("1 = 0")
        else:
            clauses.append(f"id IN ({', '.join('?' * len(ids))})")
            params.extend(ids)
    return " WHERE " + " AND ".join(clauses), params


def append_txn(cursor: Any, engine: DatabaseEngine, owner: str, id: str, with_jid: str,
               stamp: float, xml: str) -> int:
    """Store one message at the end of ``owner``'s archive; returns its ``seq``."""
    with_bare = with_jid.partition("/")[0]
    return engine.insert_returning_id(
        cursor, "archive", ("owner", "id", "with_bare", "with_full", "stamp", "xml"),
        (owner, id, with_bare, with_jid, float(stamp), xml), id_column="seq")


def append_many_txn(cursor: Any, engine: DatabaseEngine,
                    rows: Sequence[tuple[str, str, str, float, str]]) -> int:
    """Store ``(owner, id, with_jid, stamp, xml)`` rows in list order; returns how many."""
    if not rows:
        return 0
    cursor.executemany(engine.sql(
        "INSERT INTO archive (owner, id, with_bare, with_full, stamp, xml) VALUES (?, ?, ?, ?, ?, ?)"),
        [(owner, id_, with_jid.partition("/")[0], with_jid, float(stamp), xml)
         for owner, id_, with_jid, stamp, xml in rows])
    return len(rows)


def positions_txn(cursor: Any, engine: DatabaseEngine, owner: str, ids: Sequence[str]) -> dict[str, int]:
    """The ``seq`` of each of ``ids`` present in ``owner``'s archive."""
    found: dict[str, int] = {}
    ids = list(dict.fromkeys(ids))
    for start in range(0, len(ids), _ID_BATCH):
        batch = ids[start:start + _ID_BATCH]
        cursor.execute(engine.sql(
            f"SELECT id, seq FROM archive WHERE owner = ? AND id IN ({engine.placeholders(len(batch))})"),
            (owner, *batch))
        found.update((id_, int(seq)) for id_, seq in cursor.fetchall())
    return found


def query_txn(cursor: Any, engine: DatabaseEngine, owner: str, query: ArchiveQuery, limit: int,
              newest_first: bool = False, offset: int = 0) -> list[ArchivedMessage]:
    """At most ``limit`` messages ``query`` selects, oldest first (newest first if asked)."""
    where, params = _where(owner, query)
    order = "DESC" if newest_first else "ASC"
    cursor.execute(engine.sql(f"{_SELECT}{where} ORDER BY seq {order} LIMIT ? OFFSET ?"),
                   (*params, max(0, int(limit)), max(0, int(offset))))
    return [_message(row) for row in cursor.fetchall()]


def count_txn(cursor: Any, engine: DatabaseEngine, owner: str, query: ArchiveQuery) -> int:
    """The number of messages ``query`` selects."""
    where, params = _where(owner, query)
    cursor.execute(engine.sql(f"SELECT COUNT(*) FROM archive{where}"), tuple(params))
    return int(cursor.fetchone()[0])


def bounds_txn(cursor: Any, engine: DatabaseEngine,
               owner: str) -> tuple[ArchivedMessage, ArchivedMessage] | None:
    """The oldest and newest messages of ``owner``'s archive, or None if it is empty."""
    ends = []
    for order in ("ASC", "DESC"):
        cursor.execute(engine.sql(f"{_SELECT} WHERE owner = ? ORDER BY seq {order} LIMIT 1"), (owner,))
        row = cursor.fetchone()
        if row is None:
            return None
        ends.append(_message(row))
    return ends[0], ends[1]


def trim_txn(cursor: Any, engine: DatabaseEngine, owner: str, keep: int) -> int:
    """Delete ``owner``'s oldest messages beyond the newest ``keep``; returns how many."""
    cursor.execute(engine.sql(
        "DELETE FROM archive WHERE owner = ? AND seq <= "
        "(SELECT seq FROM archive WHERE owner = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)"),
        (owner, owner, max(0, int(keep))))
    return max(cursor.rowcount, 0)


def expire_txn(cursor: Any, engine: DatabaseEngine, before: float) -> int:
    """Delete every archived message stamped before ``before``; returns how many."""
    cursor.execute(engine.sql("DELETE FROM archive WHERE stamp < ?"), (float(before),))
    return max(cursor.rowcount, 0)


def get_prefs_txn(cursor: Any, engine: DatabaseEngine, owner: str) -> ArchivePrefs | None:
    """``owner``'s archiving preferences, or None."""
    cursor.execute(engine.sql(
        "SELECT default_mode, always_jids, never_jids FROM archive_prefs WHERE owner = ?"), (owner,))
    row = cursor.fetchone()
    if row is None:
        return None
    default, always, never = row
    return ArchivePrefs(default=default, always=tuple(json.loads(always or "[]")),
                        never=tuple(json.loads(never or "[]")))


def set_prefs_txn(cursor: Any, engine: DatabaseEngine, owner: str, prefs: ArchivePrefs) -> None:
    """Store ``owner``'s archiving preferences."""
    cursor.execute(engine.upsert("archive_prefs", ("owner",),
                                 ("owner", "default_mode", "always_jids", "never_jids")),
                   (owner, prefs.default, json.dumps(list(prefs.always)), json.dumps(list(prefs.never))))


def remove_owner_txn(cursor: Any, engine: DatabaseEngine, owner: str) -> int:
    """Delete ``owner``'s archive and preferences; returns the number of messages removed."""
    cursor.execute(engine.sql("DELETE FROM archive WHERE owner = ?"), (owner,))
    removed = max(cursor.rowcount, 0)
    cursor.execute(engine.sql("DELETE FROM archive_prefs WHERE owner = ?"), (owner,))
    return removed


@implementer(IArchiveStore)
class SqlArchiveStore:
    """``IArchiveStore`` in an SQL database; ``append`` fires once the message is committed."""

    def __init__(self, database: Database) -> None:
        """
        Args:
            database: where the tables live.
        """
        self._db = database

    def append(self, owner: str, id: str, with_jid: str, stamp: float, xml: str) -> "defer.Deferred[int]":
        """See ``IArchiveStore.append``."""
        return self._db.run_interaction("archive_append", append_txn, self._db.engine, owner, id,
                                        with_jid, stamp, xml)

    def append_many(self, rows: list[tuple[str, str, str, float, str]]) -> "defer.Deferred[int]":
        """See ``IArchiveStore.append_many``."""
        return self._db.run_interaction("archive_append_many", append_many_txn, self._db.engine, list(rows))

    def positions(self, owner: str, ids: list[str]) -> "defer.Deferred[dict[str, int]]":
        """See ``IArchiveStore.positions``."""
        return self._db.run_interaction("archive_positions", positions_txn, self._db.engine, owner,
                                        list(ids))

    def query(self, owner: str, query: ArchiveQuery, limit: int, newest_first: bool = False,
              offset: int = 0) -> "defer.Deferred[list[ArchivedMessage]]":
        """See ``IArchiveStore.query``."""
        return self._db.run_interaction("archive_query", query_txn, self._db.engine, owner, query, limit,
                                        newest_first, offset)

    def count(self, owner: str, query: ArchiveQuery) -> "defer.Deferred[int]":
        """See ``IArchiveStore.count``."""
        return self._db.run_interaction("archive_count", count_txn, self._db.engine, owner, query)

    def bounds(self, owner: str) -> "defer.Deferred[tuple[ArchivedMessage, ArchivedMessage] | None]":
        """See ``IArchiveStore.bounds``."""
        return self._db.run_interaction("archive_bounds", bounds_txn, self._db.engine, owner)

    def trim(self, owner: str, keep: int) -> "defer.Deferred[int]":
        """See ``IArchiveStore.trim``."""
        return self._db.run_interaction("archive_trim", trim_txn, self._db.engine, owner, keep)

    def expire(self, before: float) -> "defer.Deferred[int]":
        """See ``IArchiveStore.expire``."""
        return self._db.run_interaction("archive_expire", expire_txn, self._db.engine, before)

    def get_prefs(self, owner: str) -> "defer.Deferred[ArchivePrefs | None]":
        """See ``IArchiveStore.get_prefs``."""
        return self._db.run_interaction("archive_get_prefs", get_prefs_txn, self._db.engine, owner)

    def set_prefs(self, owner: str, prefs: ArchivePrefs) -> "defer.Deferred[None]":
        """See ``IArchiveStore.set_prefs``."""
        return self._db.run_interaction("archive_set_prefs", set_prefs_txn, self._db.engine, owner, prefs)

    def remove_owner(self, owner: str) -> "defer.Deferred[int]":
        """See ``IArchiveStore.remove_owner``."""
        return self._db.run_interaction("archive_remove_owner", remove_owner_txn, self._db.engine, owner)
