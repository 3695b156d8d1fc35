"""Contract tests for IOfflineStore, run against every backend."""

from __future__ import annotations

import pytest_twisted
from zope.interface.verify import verifyObject

from tigasepy.storage.interfaces import IOfflineStore, OfflineMessage

OWNER = "alice@example.org"


def test_store_provides_interface(stores):
    """The offline store implements IOfflineStore."""
    assert verifyObject(IOfflineStore, stores.get(IOfflineStore))


@pytest_twisted.ensureDeferred
async def test_messages_come_back_oldest_first_with_their_stamps(stores):
    store = stores.get(IOfflineStore)
    ids = [await store.append(OWNER, f"<message id='{n}'/>", 1000.0 + n) for n in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert await store.fetch(OWNER) == [
        OfflineMessage(id=i, stamp=1000.0 + n, xml=f"<message id='{n}'/>") for n, i in enumerate(ids)]
    assert [m.id for m in await store.fetch(OWNER, limit=2)] == ids[:2]
    assert await store.fetch(OWNER, limit=0) == []


@pytest_twisted.ensureDeferred
async def test_count_is_per_owner(stores):
    store = stores.get(IOfflineStore)
    assert await store.count(OWNER) == 0
    await store.append(OWNER, "<message/>", 1.0)
    await store.append(OWNER, "<message/>", 2.0)
    await store.append("bob@example.org", "<message/>", 3.0)
    assert await store.count(OWNER) == 2
    assert await store.count("bob@example.org") == 1


@pytest_twisted.ensureDeferred
async def test_fetch_does_not_remove_and_delete_removes_only_given_ids(stores):
    store = stores.get(IOfflineStore)
    ids = [await store.append(OWNER, f"<m n='{n}'/>", float(n)) for n in range(4)]
    await store.fetch(OWNER)
    assert await store.count(OWNER) == 4
    assert await store.delete(OWNER, [ids[0], ids[2]]) == 2
    assert [m.id for m in await store.fetch(OWNER)] == [ids[1], ids[3]]
    assert await store.delete(OWNER, []) == 0
    assert await store.delete(OWNER, [ids[0]]) == 0


@pytest_twisted.ensureDeferred
async def test_delete_never_touches_another_owners_messages(stores):
    store = stores.get(IOfflineStore)
    theirs = await store.append("bob@example.org", "<m/>", 1.0)
    assert await store.delete(OWNER, [theirs]) == 0
    assert await store.count("bob@example.org") == 1


@pytest_twisted.ensureDeferred
async def test_delete_of_many_ids_works_past_parameter_limits(stores):
    store = stores.get(IOfflineStore)
    ids = [await store.append(OWNER, "<m/>", float(n)) for n in range(1200)]
    assert await store.delete(OWNER, ids[:1100]) == 1100
    assert [m.id for m in await store.fetch(OWNER)] == ids[1100:]


@pytest_twisted.ensureDeferred
async def test_remove_owner_drops_every_message_of_that_owner(stores):
    store = stores.get(IOfflineStore)
    await store.append(OWNER, "<m/>", 1.0)
    await store.append(OWNER, "<m/>", 2.0)
    await store.append("bob@example.org", "<m/>", 3.0)
    assert await store.remove_owner(OWNER) == 2
    assert await store.count(OWNER) == 0
    assert await store.count("bob@example.org") == 1
    new_id = await store.append(OWNER, "<m/>", 4.0)
    assert [m.id for m in await store.fetch(OWNER)] == [new_id]
