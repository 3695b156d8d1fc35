"""Contract tests for IMucRoomStore (persistent MUC rooms), run against every backend."""

from __future__ import annotations

import pytest_twisted
from zope.interface.verify import verifyObject

from tigasepy.storage.muc import IMucRoomStore, StoredRoom

SERVICE = "conference.example.org"


def test_store_provides_interface(stores):
    assert verifyObject(IMucRoomStore, stores.get(IMucRoomStore))


@pytest_twisted.ensureDeferred
async def test_save_load_replace_delete(stores):
    store = stores.get(IMucRoomStore)
    assert await store.load_rooms(SERVICE) == []
    room = StoredRoom(f"b@{SERVICE}", {"persistentroom": True, "roomname": "Café ☕", "maxusers": 20},
                      {"alice@example.org": "owner", "eve@example.org": "outcast"})
    await store.save_room(SERVICE, room)
    await store.save_room(SERVICE, StoredRoom(f"a@{SERVICE}", {"persistentroom": True}, {}))
    await store.save_room("other.example.org", StoredRoom("x@other.example.org", {}, {}))
    loaded = await store.load_rooms(SERVICE)
    assert [r.jid for r in loaded] == [f"a@{SERVICE}", f"b@{SERVICE}"]
    assert loaded[1] == room
    room.affiliations["bob@example.org"] = "member"
    await store.save_room(SERVICE, room)
    assert (await store.load_rooms(SERVICE))[1].affiliations["bob@example.org"] == "member"
    await store.delete_room(SERVICE, f"a@{SERVICE}")
    await store.delete_room(SERVICE, f"nothing@{SERVICE}")
    assert [r.jid for r in await store.load_rooms(SERVICE)] == [f"b@{SERVICE}"]
    assert [r.jid for r in await store.load_rooms("other.example.org")] == ["x@other.example.org"]
