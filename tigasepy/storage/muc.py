"""Where MUC services keep persistent rooms (configuration and affiliations), in memory.

Room archives (XEP-0313 on the room JID) go to the server's ``IArchiveStore`` with the
room's bare JID as the owner; this store holds only what a persistent room needs to come
back after a restart. The SQL store is ``tigasepy.storage.sql.muc`` (schema 006_muc).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from zope.interface import Interface, implementer


@dataclass
class StoredRoom:
    """A persistent room as stored: its bare JID, config (option -> value) and affiliations."""

    jid: str
    config: dict[str, Any] = field(default_factory=dict)
    affiliations: dict[str, str] = field(default_factory=dict)   # bare JID -> owner/admin/member/outcast

    def to_json(self) -> str:
        return json.dumps({"config": self.config, "affiliations": self.affiliations}, sort_keys=True)

    @classmethod
    def from_json(cls, jid: str, text: str) -> "StoredRoom":
        data = json.loads(text)
        return cls(jid, dict(data.get("config", {})), dict(data.get("affiliations", {})))


class IMucRoomStore(Interface):
    """Persistent rooms of MUC services; every method returns a Deferred."""

    def load_rooms(service: str) -> Any:
        """Fires with the ``StoredRoom``s of ``service`` (the component's domain)."""

    def save_room(service: str, room: StoredRoom) -> Any:
        """Store (create or replace) ``room`` of ``service``."""

    def delete_room(service: str, jid: str) -> Any:
        """Forget room ``jid`` of ``service`` (no error when it is unknown)."""


@implementer(IMucRoomStore)
class MemoryMucRoomStore:
    """Rooms kept in a dict (tests, memory storage); stored as JSON like the SQL store would."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, str]] = {}

    def load_rooms(self, service: str) -> defer.Deferred:
        rooms = self._rooms.get(service, {})
        return defer.succeed([StoredRoom.from_json(jid, text) for jid, text in sorted(rooms.items())])

    def save_room(self, service: str, room: StoredRoom) -> defer.Deferred:
        self._rooms.setdefault(service, {})[room.jid] = room.to_json()
        return defer.succeed(None)

    def delete_room(self, service: str, jid: str) -> defer.Deferred:
        self._rooms.get(service, {}).pop(jid, None)
        return defer.succeed(None)
