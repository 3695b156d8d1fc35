"""Contract tests for IPrivacyStore (XEP-0016 lists; XEP-0191 keeps its blocklist in the default list)."""

from __future__ import annotations

import pytest
import pytest_twisted
from zope.interface.verify import verifyObject

from tigasepy.storage.interfaces import IPrivacyStore, PrivacyItem, PrivacySettings

OWNER = "alice@example.org"
BLOCK = PrivacyItem(order=1, action="deny", type="jid", value="eve@example.com")


def test_store_provides_interface(stores):
    """The privacy store implements IPrivacyStore."""
    assert verifyObject(IPrivacyStore, stores.get(IPrivacyStore))


@pytest_twisted.ensureDeferred
async def test_an_account_without_lists_has_empty_settings(stores):
    assert await stores.get(IPrivacyStore).get_all(OWNER) == PrivacySettings()


@pytest_twisted.ensureDeferred
async def test_put_list_round_trips_every_field_in_order(stores):
    store = stores.get(IPrivacyStore)
    items = (
        PrivacyItem(order=4294967295, action="allow"),
        PrivacyItem(order=0, action="deny", type="group", value="Énemies ☃", kinds=frozenset({"message"})),
        PrivacyItem(order=7, action="allow", type="subscription", value="both",
                    kinds=frozenset({"iq", "presence-in", "presence-out", "message"})),
        BLOCK,
    )
    await store.put_list(OWNER, "public", items)
    settings = await store.get_all(OWNER)
    assert settings.default is None
    assert settings.lists == {"public": tuple(sorted(items, key=lambda i: i.order))}


@pytest_twisted.ensureDeferred
async def test_put_list_replaces_the_whole_list(stores):
    store = stores.get(IPrivacyStore)
    await store.put_list(OWNER, "public", (BLOCK, PrivacyItem(order=2, action="allow")))
    await store.put_list(OWNER, "public", (PrivacyItem(order=5, action="deny", kinds=frozenset({"iq"})),))
    assert (await store.get_all(OWNER)).lists == {
        "public": (PrivacyItem(order=5, action="deny", kinds=frozenset({"iq"})),)}


@pytest_twisted.ensureDeferred
async def test_lists_are_per_owner(stores):
    store = stores.get(IPrivacyStore)
    await store.put_list(OWNER, "a", (BLOCK,), make_default=True)
    await store.put_list("bob@example.org", "a", (PrivacyItem(order=1, action="allow"),))
    assert (await store.get_all("bob@example.org")) == PrivacySettings(
        lists={"a": (PrivacyItem(order=1, action="allow"),)}, default=None)
    assert (await store.get_all(OWNER)).default == "a"


@pytest_twisted.ensureDeferred
async def test_default_list_is_set_changed_and_declined(stores):
    store = stores.get(IPrivacyStore)
    await store.put_list(OWNER, "a", (BLOCK,))
    await store.put_list(OWNER, "b", (BLOCK,), make_default=True)
    assert (await store.get_all(OWNER)).default == "b"
    await store.set_default(OWNER, "a")
    assert (await store.get_all(OWNER)).default == "a"
    await store.set_default(OWNER, None)
    assert (await store.get_all(OWNER)).default is None
    await store.set_default(OWNER, None)
    assert sorted((await store.get_all(OWNER)).lists) == ["a", "b"]


@pytest_twisted.ensureDeferred
async def test_default_must_name_an_existing_list(stores):
    store = stores.get(IPrivacyStore)
    await store.put_list(OWNER, "a", (BLOCK,), make_default=True)
    with pytest.raises(KeyError):
        await store.set_default(OWNER, "missing")
    with pytest.raises(KeyError):
        await store.set_default("bob@example.org", "a")
    assert (await store.get_all(OWNER)).default == "a"


@pytest_twisted.ensureDeferred
async def test_removing_the_default_list_leaves_no_default(stores):
    store = stores.get(IPrivacyStore)
    await store.put_list(OWNER, "a", (BLOCK,), make_default=True)
    await store.put_list(OWNER, "b", (BLOCK,))
    assert await store.remove_list(OWNER, "a") is True
    assert await store.remove_list(OWNER, "a") is False
    assert await store.get_all(OWNER) == PrivacySettings(lists={"b": (BLOCK,)}, default=None)
    await store.put_list(OWNER, "a", (BLOCK,))
    assert (await store.get_all(OWNER)).default is None


@pytest_twisted.ensureDeferred
async def test_remove_owner_deletes_every_list_of_that_owner_only(stores):
    store = stores.get(IPrivacyStore)
    await store.put_list(OWNER, "a", (BLOCK,), make_default=True)
    await store.put_list(OWNER, "b", (BLOCK,))
    await store.put_list("bob@example.org", "a", (BLOCK,), make_default=True)
    await store.remove_owner(OWNER)
    assert await store.get_all(OWNER) == PrivacySettings()
    assert (await store.get_all("bob@example.org")).default == "a"
