"""Contract tests for IPepStore, run against every backend."""

from __future__ import annotations

import pytest_twisted
from zope.interface.verify import verifyObject

from tigasepy.storage.interfaces import IPepStore, PepItem

OWNER = "alice@example.org"
OTHER = "bob@example.org"
NODE = "http://jabber.org/protocol/tune"


def test_store_provides_interface(stores):
    assert verifyObject(IPepStore, stores.get(IPepStore))


@pytest_twisted.ensureDeferred
async def test_nodes_and_configuration(stores):
    store = stores.get(IPepStore)
    assert await store.get_node(OWNER, NODE) is None and await store.nodes(OWNER) == []
    await store.put_node(OWNER, NODE, {"pubsub#access_model": "presence", "pubsub#max_items": "1"})
    await store.put_node(OWNER, "urn:b", {})
    await store.put_node(OTHER, "urn:c", {"pubsub#access_model": "open"})
    assert await store.get_node(OWNER, NODE) == {"pubsub#access_model": "presence", "pubsub#max_items": "1"}
    await store.put_node(OWNER, NODE, {"pubsub#access_model": "whitelist"})
    assert await store.get_node(OWNER, NODE) == {"pubsub#access_model": "whitelist"}
    assert await store.nodes(OWNER) == sorted([NODE, "urn:b"])
    assert await store.delete_node(OWNER, "urn:b") is True
    assert await store.delete_node(OWNER, "urn:b") is False
    assert await store.nodes(OWNER) == [NODE]
    assert await store.nodes(OTHER) == ["urn:c"]


@pytest_twisted.ensureDeferred
async def test_items_in_publication_order_with_trim_and_republish(stores):
    store = stores.get(IPepStore)
    await store.put_node(OWNER, NODE, {})
    assert await store.publish(OWNER, NODE, PepItem("a", "<x xmlns='u'>1</x>"), None) == []
    assert await store.publish(OWNER, NODE, PepItem("b", "<x xmlns='u'>2</x>"), None) == []
    assert await store.publish(OWNER, NODE, PepItem("c", "<x xmlns='u'>Ä</x>"), None) == []
    assert [i.item_id for i in await store.items(OWNER, NODE)] == ["c", "b", "a"]
    assert await store.publish(OWNER, NODE, PepItem("a", "<x xmlns='u'>1b</x>"), None) == []
    assert await store.items(OWNER, NODE, 2) == [PepItem("a", "<x xmlns='u'>1b</x>"), PepItem("c", "<x xmlns='u'>Ä</x>")]
    assert await store.publish(OWNER, NODE, PepItem("d", "<x xmlns='u'>4</x>"), 2) == ["c", "b"]
    assert [i.item_id for i in await store.items(OWNER, NODE)] == ["d", "a"]
    assert await store.get_items(OWNER, NODE, ["a", "zz", "d"]) == [PepItem("a", "<x xmlns='u'>1b</x>"),
                                                                     PepItem("d", "<x xmlns='u'>4</x>")]
    assert await store.retract(OWNER, NODE, "a") is True
    assert await store.retract(OWNER, NODE, "a") is False
    assert [i.item_id for i in await store.items(OWNER, NODE)] == ["d"]
    await store.purge(OWNER, NODE)
    assert await store.items(OWNER, NODE) == []


@pytest_twisted.ensureDeferred
async def test_remove_owner_and_delete_node_drop_items(stores):
    store = stores.get(IPepStore)
    for owner in (OWNER, OTHER):
        await store.put_node(owner, NODE, {})
        await store.publish(owner, NODE, PepItem("i", f"<x xmlns='u'>{owner}</x>"), None)
    await store.delete_node(OWNER, NODE)
    await store.put_node(OWNER, NODE, {})
    assert await store.items(OWNER, NODE) == []
    await store.publish(OWNER, NODE, PepItem("i", "<x xmlns='u'/>"), None)
    await store.remove_owner(OWNER)
    await store.remove_owner(OWNER)
    assert await store.nodes(OWNER) == [] and await store.items(OWNER, NODE) == []
    assert await store.items(OTHER, NODE) == [PepItem("i", "<x xmlns='u'>bob@example.org</x>")]
