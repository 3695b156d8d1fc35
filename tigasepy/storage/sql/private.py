"""Private XML storage (XEP-0049) in SQL (table ``private_storage``)."""

from __future__ import annotations

from typing import Any, Mapping

from twisted.internet import defer
from zope.interface import implementer

from tigasepy.storage.database import Database
from tigasepy.storage.engines import DatabaseEngine
from tigasepy.storage.interfaces import IPrivateStore


def get_private_txn(cursor: Any, engine: DatabaseEngine, owner: str, namespace: str) -> str | None:
    """The XML ``owner`` stored under ``namespace``, or None."""
    cursor.execute(engine.sql("SELECT xml FROM private_storage WHERE owner = ? AND namespace = ?"),
                   (owner, namespace))
    row = cursor.fetchone()
    return row[0] if row is not None else None


def set_private_txn(cursor: Any, engine: DatabaseEngine, owner: str, items: Mapping[str, str]) -> None:
    """Insert or replace the XML of each namespace in ``items``."""
    statement = engine.upsert("private_storage", ("owner", "namespace"), ("owner", "namespace", "xml"))
    for namespace, xml in items.items():
        cursor.execute(statement, (owner, namespace, xml))


def namespaces_txn(cursor: Any, engine: DatabaseEngine, owner: str) -> list[str]:
    """The namespaces ``owner`` stored something under, in code point order."""
    cursor.execute(engine.sql("SELECT namespace FROM private_storage WHERE owner = ?"), (owner,))
    return sorted(namespace for (namespace,) in cursor.fetchall())


def remove_owner_txn(cursor: Any, engine: DatabaseEngine, owner: str) -> None:
    """Delete everything ``owner`` stored."""
    cursor.execute(engine.sql("DELETE FROM private_storage WHERE owner = ?"), (owner,))


@implementer(IPrivateStore)
class SqlPrivateStore:
    """``IPrivateStore`` in an SQL database."""

    def __init__(self, database: Database) -> None:
        """
        Args:
            database: where the table lives.
        """
        self._db = database

    def get(self, owner: str, namespace: str) -> "defer.Deferred[str | None]":
        """See ``IPrivateStore.get``."""
        return self._db.run_interaction("get_private", get_private_txn, self._db.engine, owner, namespace)

    def set(self, owner: str, items: dict[str, str]) -> "defer.Deferred[None]":
        """See ``IPrivateStore.set``."""
        return self._db.run_interaction("set_private", set_private_txn, self._db.engine, owner, dict(items))

    def namespaces(self, owner: str) -> "defer.Deferred[list[str]]":
        """See ``IPrivateStore.namespaces``."""
        return self._db.run_interaction("private_namespaces", namespaces_txn, self._db.engine, owner)

    def remove_owner(self, owner: str) -> "defer.Deferred[None]":
        """See ``IPrivateStore.remove_owner``."""
        return self._db.run_interaction("remove_private", remove_owner_txn, self._db.engine, owner)
