"""vcard-temp (XEP-0054) in SQL (table ``vcard``), with the photo hash of XEP-0153."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from tigasepy.storage.database import Database
from tigasepy.storage.engines import DatabaseEngine
from tigasepy.storage.interfaces import IVCardStore, VCard


def get_vcard_txn(cursor: Any, engine: DatabaseEngine, owner: str) -> VCard | None:
    """The vCard of ``owner``, or None."""
    cursor.execute(engine.sql("SELECT xml, photo_hash FROM vcard WHERE owner = ?"), (owner,))
    row = cursor.fetchone()
    return VCard(xml=row[0], photo_hash=row[1]) if row is not None else None


def set_vcard_txn(cursor: Any, engine: DatabaseEngine, owner: str, vcard: VCard) -> None:
    """Insert or replace the vCard of ``owner``."""
    cursor.execute(engine.upsert("vcard", ("owner",), ("owner", "xml", "photo_hash")),
                   (owner, vcard.xml, vcard.photo_hash))


def remove_owner_txn(cursor: Any, engine: DatabaseEngine, owner: str) -> None:
    """Delete the vCard of ``owner``."""
    cursor.execute(engine.sql("DELETE FROM vcard WHERE owner = ?"), (owner,))


@implementer(IVCardStore)
class SqlVCardStore:
    """``IVCardStore`` in an SQL database."""

    def __init__(self, database: Database) -> None:
        """
        Args:
            database: where the table lives.
        """
        self._db = database

    def get(self, owner: str) -> "defer.Deferred[VCard | None]":
        """See ``IVCardStore.get``."""
        return self._db.run_interaction("get_vcard", get_vcard_txn, self._db.engine, owner)

    def set(self, owner: str, vcard: VCard) -> "defer.Deferred[None]":
        """See ``IVCardStore.set``."""
        return self._db.run_interaction("set_vcard", set_vcard_txn, self._db.engine, owner, vcard)

    def remove_owner(self, owner: str) -> "defer.Deferred[None]":
        """See ``IVCardStore.remove_owner``."""
        return self._db.run_interaction("remove_vcard", remove_owner_txn, self._db.engine, owner)
