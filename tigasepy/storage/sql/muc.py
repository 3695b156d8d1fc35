"""Persistent MUC rooms in SQL (table ``muc_rooms``, schema 006_muc)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from tigasepy.storage.database import Database
from tigasepy.storage.engines import DatabaseEngine
from tigasepy.storage.muc import IMucRoomStore, StoredRoom


def load_rooms_txn(cursor: Any, engine: DatabaseEngine, service: str) -> list[StoredRoom]:
    """The persistent rooms of ``service``, by JID."""
    cursor.execute(engine.sql("SELECT jid, data FROM muc_rooms WHERE service = ?"), (service,))
    return sorted((StoredRoom.from_json(jid, data) for jid, data in cursor.fetchall()), key=lambda r: r.jid)


def save_room_txn(cursor: Any, engine: DatabaseEngine, service: str, jid: str, data: str) -> None:
    """Insert or replace one room."""
    cursor.execute(engine.upsert("muc_rooms", ("service", "jid"), ("service", "jid", "data")),
                   (service, jid, data))


def delete_room_txn(cursor: Any, engine: DatabaseEngine, service: str, jid: str) -> None:
    """Delete one room (nothing when unknown)."""
    cursor.execute(engine.sql("DELETE FROM muc_rooms WHERE service = ? AND jid = ?"), (service, jid))


@implementer(IMucRoomStore)
class SqlMucRoomStore:
    """``IMucRoomStore`` in an SQL database."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def load_rooms(self, service: str) -> "defer.Deferred[list[StoredRoom]]":
        """See ``IMucRoomStore.load_rooms``."""
        return self._db.run_interaction("muc_load_rooms", load_rooms_txn, self._db.engine, service)

    def save_room(self, service: str, room: StoredRoom) -> "defer.Deferred[None]":
        """See ``IMucRoomStore.save_room``."""
        return self._db.run_interaction("muc_save_room", save_room_txn, self._db.engine, service, room.jid,
                                        room.to_json())

    def delete_room(self, service: str, jid: str) -> "defer.Deferred[None]":
        """See ``IMucRoomStore.delete_room``."""
        return self._db.run_interaction("muc_delete_room", delete_room_txn, self._db.engine, service, jid)
