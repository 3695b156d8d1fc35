"""Contract tests for IRosterStore, run against every backend."""

from __future__ import annotations

import pytest_twisted
from zope.interface.verify import verifyObject

from tigasepy.storage.interfaces import IRosterStore, RosterItem

OWNER = "alice@example.org"


def test_store_provides_interface(stores):
    """The roster store implements IRosterStore."""
    assert verifyObject(IRosterStore, stores.get(IRosterStore))


@pytest_twisted.ensureDeferred
async def test_empty_roster_has_no_items_and_version_zero(stores):
    store = stores.get(IRosterStore)
    assert await store.get_items(OWNER) == []
    assert await store.get_item(OWNER, "bob@example.org") is None
    assert await store.get_version(OWNER) == 0


@pytest_twisted.ensureDeferred
async def test_put_item_round_trips_every_field(stores):
    store = stores.get(IRosterStore)
    item = RosterItem(contact="bob@example.org", name="Bob ☃", subscription="both", ask=True,
                      pending_in=True, approved=True, groups=("Friends", "Ünïcode"), in_roster=False)
    await store.put_item(OWNER, item)
    assert await store.get_item(OWNER, "bob@example.org") == item
    assert await store.get_items(OWNER) == [item]
    plain = RosterItem(contact="carol@example.org")
    await store.put_item(OWNER, plain)
    assert await store.get_item(OWNER, "carol@example.org") == plain


@pytest_twisted.ensureDeferred
async def test_put_item_replaces_the_row_and_bumps_the_version(stores):
    store = stores.get(IRosterStore)
    await store.put_item(OWNER, RosterItem(contact="bob@example.org", name="Bob", groups=("A",)))
    assert await store.get_version(OWNER) == 1
    updated = RosterItem(contact="bob@example.org", name=None, subscription="to", groups=())
    await store.put_item(OWNER, updated)
    assert await store.get_version(OWNER) == 2
    assert await store.get_items(OWNER) == [updated]


@pytest_twisted.ensureDeferred
async def test_items_are_per_owner_and_ordered_by_contact(stores):
    store = stores.get(IRosterStore)
    for contact in ("zed@example.org", "bob@example.org", "carol@example.org"):
        await store.put_item(OWNER, RosterItem(contact=contact))
    await store.put_item("dave@example.org", RosterItem(contact="alice@example.org"))
    assert [i.contact for i in await store.get_items(OWNER)] == [
        "bob@example.org", "carol@example.org", "zed@example.org"]
    assert [i.contact for i in await store.get_items("dave@example.org")] == ["alice@example.org"]
    assert await store.get_version(OWNER) == 3
    assert await store.get_version("dave@example.org") == 1


@pytest_twisted.ensureDeferred
async def test_remove_item_bumps_version_only_when_something_was_removed(stores):
    store = stores.get(IRosterStore)
    await store.put_item(OWNER, RosterItem(contact="bob@example.org"))
    assert await store.remove_item(OWNER, "bob@example.org") is True
    assert await store.get_item(OWNER, "bob@example.org") is None
    assert await store.get_version(OWNER) == 2
    assert await store.remove_item(OWNER, "bob@example.org") is False
    assert await store.get_version(OWNER) == 2


@pytest_twisted.ensureDeferred
async def test_remove_owner_empties_the_roster_and_keeps_the_version_growing(stores):
    store = stores.get(IRosterStore)
    await store.put_item(OWNER, RosterItem(contact="bob@example.org"))
    await store.put_item(OWNER, RosterItem(contact="carol@example.org"))
    await store.put_item("dave@example.org", RosterItem(contact="bob@example.org"))
    await store.remove_owner(OWNER)
    assert await store.get_items(OWNER) == []
    assert await store.get_version(OWNER) > 2
    assert len(await store.get_items("dave@example.org")) == 1
