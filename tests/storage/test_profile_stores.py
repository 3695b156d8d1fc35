"""Contract tests for IVCardStore, IPrivateStore and ILastActivityStore, run against every backend."""

from __future__ import annotations

import pytest
import pytest_twisted
from zope.interface.verify import verifyObject

from tigasepy.storage.interfaces import ILastActivityStore, IPrivateStore, IVCardStore, LastActivity, VCard

OWNER = "alice@example.org"
OTHER = "bob@example.org"


@pytest.mark.parametrize("interface", [IVCardStore, IPrivateStore, ILastActivityStore])
def test_store_provides_interface(stores, interface):
    assert verifyObject(interface, stores.get(interface))


@pytest_twisted.ensureDeferred
async def test_vcard_set_replace_and_remove(stores):
    store = stores.get(IVCardStore)
    assert await store.get(OWNER) is None
    await store.set(OWNER, VCard("<vCard xmlns='vcard-temp'><FN>Ä</FN></vCard>", "ab" * 20))
    await store.set(OTHER, VCard("<vCard xmlns='vcard-temp'/>"))
    assert await store.get(OWNER) == VCard("<vCard xmlns='vcard-temp'><FN>Ä</FN></vCard>", "ab" * 20)
    await store.set(OWNER, VCard("<vCard xmlns='vcard-temp'><FN>B</FN></vCard>", None))
    assert await store.get(OWNER) == VCard("<vCard xmlns='vcard-temp'><FN>B</FN></vCard>", None)
    await store.remove_owner(OWNER)
    await store.remove_owner(OWNER)          # removing nothing is fine
    assert await store.get(OWNER) is None
    assert await store.get(OTHER) == VCard("<vCard xmlns='vcard-temp'/>")


@pytest_twisted.ensureDeferred
async def test_private_data_per_owner_and_namespace(stores):
    store = stores.get(IPrivateStore)
    assert await store.get(OWNER, "urn:a") is None
    assert await store.namespaces(OWNER) == []
    await store.set(OWNER, {"urn:b": "<b xmlns='urn:b'/>", "urn:a": "<a xmlns='urn:a'>1</a><a xmlns='urn:a'/>"})
    await store.set(OTHER, {"urn:a": "<a xmlns='urn:a'>other</a>"})
    await store.set(OWNER, {"urn:b": "<b xmlns='urn:b'>2</b>"})
    await store.set(OWNER, {})
    assert await store.get(OWNER, "urn:a") == "<a xmlns='urn:a'>1</a><a xmlns='urn:a'/>"
    assert await store.get(OWNER, "urn:b") == "<b xmlns='urn:b'>2</b>"
    assert await store.namespaces(OWNER) == ["urn:a", "urn:b"]
    await store.remove_owner(OWNER)
    assert await store.namespaces(OWNER) == [] and await store.get(OWNER, "urn:a") is None
    assert await store.get(OTHER, "urn:a") == "<a xmlns='urn:a'>other</a>"


@pytest_twisted.ensureDeferred
async def test_private_namespaces_in_code_point_order(stores):
    store = stores.get(IPrivateStore)
    names = ["urn:b", "urn:B", "urn:a", "urn:_x", "storage:bookmarks", "urn:é"]
    await store.set(OWNER, {name: "<x/>" for name in names})
    assert await store.namespaces(OWNER) == sorted(names)


@pytest_twisted.ensureDeferred
async def test_last_activity_set_replace_and_remove(stores):
    store = stores.get(ILastActivityStore)
    assert await store.get(OWNER) is None
    await store.set(OWNER, LastActivity(1700000000.25, "Heading home"))
    await store.set(OTHER, LastActivity(5.0))
    assert await store.get(OWNER) == LastActivity(1700000000.25, "Heading home")
    await store.set(OWNER, LastActivity(1700000100.5, ""))
    assert await store.get(OWNER) == LastActivity(1700000100.5, "")
    await store.remove_owner(OWNER)
    assert await store.get(OWNER) is None
    assert await store.get(OTHER) == LastActivity(5.0, "")
