"""Contract tests for IAccountStore, run against every backend."""

from __future__ import annotations

import pytest
import pytest_twisted
from zope.interface.verify import verifyObject

from tigasepy.storage.interfaces import AccountExists, IAccountStore, NoSuchAccount, ScramCredential


def cred(hash_name: str = "SHA-1", n: int = 1) -> ScramCredential:
    return ScramCredential(hash_name=hash_name, salt=bytes([n]) * 16, iterations=4096 + n,
                           stored_key=bytes([n + 1]) * 20, server_key=bytes([n + 2]) * 20)


def test_store_provides_interface(stores):
    """The account store implements IAccountStore."""
    assert verifyObject(IAccountStore, stores.get(IAccountStore))


@pytest_twisted.ensureDeferred
async def test_created_account_exists_with_its_credentials(stores):
    store = stores.get(IAccountStore)
    assert not await store.exists("alice@example.org")
    await store.create("alice@example.org", [cred("SHA-1"), cred("SHA-256", 2)])
    assert await store.exists("alice@example.org")
    assert await store.get_credential("alice@example.org", "SHA-1") == cred("SHA-1")
    assert await store.get_credential("alice@example.org", "SHA-256") == cred("SHA-256", 2)


@pytest_twisted.ensureDeferred
async def test_creating_an_account_twice_fails_with_account_exists(stores):
    store = stores.get(IAccountStore)
    await store.create("alice@example.org", [cred()])
    with pytest.raises(AccountExists):
        await store.create("alice@example.org", [cred(n=5)])
    assert await store.get_credential("alice@example.org", "SHA-1") == cred()


@pytest_twisted.ensureDeferred
async def test_missing_credential_is_none(stores):
    store = stores.get(IAccountStore)
    assert await store.get_credential("nobody@example.org", "SHA-1") is None
    await store.create("alice@example.org", [cred("SHA-1")])
    assert await store.get_credential("alice@example.org", "SHA-256") is None


@pytest_twisted.ensureDeferred
async def test_set_credentials_replaces_every_credential(stores):
    store = stores.get(IAccountStore)
    await store.create("alice@example.org", [cred("SHA-1"), cred("SHA-256")])
    await store.set_credentials("alice@example.org", [cred("SHA-256", 7)])
    assert await store.get_credential("alice@example.org", "SHA-1") is None
    assert await store.get_credential("alice@example.org", "SHA-256") == cred("SHA-256", 7)


@pytest_twisted.ensureDeferred
async def test_set_credentials_of_unknown_account_fails(stores):
    with pytest.raises(NoSuchAccount):
        await stores.get(IAccountStore).set_credentials("nobody@example.org", [cred()])


@pytest_twisted.ensureDeferred
async def test_delete_removes_account_and_reports_whether_it_existed(stores):
    store = stores.get(IAccountStore)
    await store.create("alice@example.org", [cred()])
    assert await store.delete("alice@example.org") is True
    assert not await store.exists("alice@example.org")
    assert await store.get_credential("alice@example.org", "SHA-1") is None
    assert await store.delete("alice@example.org") is False
    await store.create("alice@example.org", [cred(n=3)])      # the JID can be reused
    assert await store.get_credential("alice@example.org", "SHA-1") == cred(n=3)


@pytest_twisted.ensureDeferred
async def test_list_accounts_is_sorted_and_filters_by_exact_domain(stores):
    store = stores.get(IAccountStore)
    for jid in ("zed@example.org", "alice@example.org", "bob@other.org", "carol@example_org",
                "dave@sub.example.org", "eve@examplexorg"):
        await store.create(jid, [cred()])
    assert await store.list_accounts("example.org") == ["alice@example.org", "zed@example.org"]
    assert await store.list_accounts("example_org") == ["carol@example_org"]
    assert await store.list_accounts("nowhere.org") == []
    assert await store.list_accounts() == sorted([
        "zed@example.org", "alice@example.org", "bob@other.org", "carol@example_org",
        "dave@sub.example.org", "eve@examplexorg"])


@pytest_twisted.ensureDeferred
async def test_list_accounts_orders_by_code_point_on_every_backend(stores):
    """One order everywhere (PostgreSQL's locale collations would put "émile" before "zed")."""
    store = stores.get(IAccountStore)
    jids = ["zed@example.org", "émile@example.org", "adam@example.org", "_x@example.org", "Zed@example.org"]
    for jid in jids:
        await store.create(jid, [cred()])
    assert await store.list_accounts() == sorted(jids)
    assert await store.list_accounts("example.org") == sorted(jids)
