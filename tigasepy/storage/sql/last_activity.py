"""Last activity (XEP-0012) in SQL (table ``last_activity``)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from tigasepy.storage.database import Database
from tigasepy.storage.engines import DatabaseEngine
from tigasepy.storage.interfaces import ILastActivityStore, LastActivity


def get_last_txn(cursor: Any, engine: DatabaseEngine, owner: str) -> LastActivity | None:
    """The last logout of ``owner``, or None."""
    cursor.execute(engine.sql("SELECT stamp, status FROM last_activity WHERE owner = ?"), (owner,))
    row = cursor.fetchone()
    return LastActivity(stamp=float(row[0]), status=row[1] or "") if row is not None else None


def set_last_txn(cursor: Any, engine: DatabaseEngine, owner: str, activity: LastActivity) -> None:
    """Insert or replace the last logout of ``owner``."""
    cursor.execute(engine.upsert("last_activity", ("owner",), ("owner", "stamp", "status")),
                   (owner, float(activity.stamp), activity.status or ""))


def remove_owner_txn(cursor: Any, engine: DatabaseEngine, owner: str) -> None:
    """Forget the last logout of ``owner``."""
    cursor.execute(engine.sql("DELETE FROM last_activity WHERE owner = ?"), (owner,))


@implementer(ILastActivityStore)
class SqlLastActivityStore:
    """``ILastActivityStore`` in an SQL database."""

    def __init__(self, database: Database) -> None:
        """
        Args:
            database: where the table lives.
        """
        self._db = database

    def get(self, owner: str) -> "defer.Deferred[LastActivity | None]":
        """See ``ILastActivityStore.get``."""
        return self._db.run_interaction("get_last_activity", get_last_txn, self._db.engine, owner)

    def set(self, owner: str, activity: LastActivity) -> "defer.Deferred[None]":
        """See ``ILastActivityStore.set``."""
        return self._db.run_interaction("set_last_activity", set_last_txn, self._db.engine, owner, activity)

    def remove_owner(self, owner: str) -> "defer.Deferred[None]":
        """See ``ILastActivityStore.remove_owner``."""
        return self._db.run_interaction("remove_last_activity", remove_owner_txn, self._db.engine, owner)
