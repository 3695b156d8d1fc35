"""AccountManager: accounts hold SCRAM credentials only, JIDs are prepared bare JIDs."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from tigasepy.auth.accounts import (
    AccountManager,
    DomainNotHosted,
    InvalidAccountJID,
    InvalidPassword,
    prepare_account_jid,
)
from tigasepy.auth.internal import InternalAuthenticator
from tigasepy.interfaces import SaslContext, SaslFailure
from tigasepy.storage.interfaces import AccountExists, NoSuchAccount, RosterItem
from tigasepy.storage.memory import MemoryAccountStore, MemoryOfflineStore, MemoryRosterStore

DOMAIN = "example.org"


def result(d: defer.Deferred):
    out = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


@pytest.fixture
def store():
    return MemoryAccountStore()


@pytest.fixture
def manager(store):
    return AccountManager(store, ("SHA-1", "SHA-256"), 4096, domains=(DOMAIN,))


def plain_ok(store, user, password) -> bool:
    exchange = InternalAuthenticator(store).start("PLAIN", SaslContext(domain=DOMAIN, secure=True))
    try:
        result(exchange.step(f"\0{user}\0{password}".encode()))
    except SaslFailure:
        return False
    return True


def test_register_stores_one_credential_per_hash_and_no_password(manager, store):
    assert result(manager.register("Alice@Example.org", "secret")) == "alice@example.org"
    for hash_name in ("SHA-1", "SHA-256"):
        cred = result(store.get_credential("alice@example.org", hash_name))
        assert cred.iterations == 4096 and b"secret" not in cred.stored_key + cred.server_key + cred.salt
    assert plain_ok(store, "alice", "secret")


def test_register_twice_fails_with_account_exists(manager):
    result(manager.register("alice@example.org", "secret"))
    with pytest.raises(AccountExists):
        result(manager.register("alice@example.org", "other"))


def test_set_password_replaces_the_credentials(manager, store):
    result(manager.register("alice@example.org", "secret"))
    result(manager.set_password("alice@example.org", "new"))
    assert plain_ok(store, "alice", "new") and not plain_ok(store, "alice", "secret")


def test_set_password_of_unknown_account_fails(manager):
    with pytest.raises(NoSuchAccount):
        result(manager.set_password("bob@example.org", "x"))


def test_remove_deletes_account_and_its_data(store):
    roster, offline = MemoryRosterStore(), MemoryOfflineStore()
    manager = AccountManager(store, ("SHA-256",), 4096, owned_stores=(roster, offline))
    result(manager.register("alice@example.org", "secret"))
    result(roster.put_item("alice@example.org", RosterItem(contact="bob@example.org")))
    result(offline.append("alice@example.org", "<message/>", 1.0))
    assert result(manager.remove("alice@example.org")) == "alice@example.org"
    assert result(manager.exists("alice@example.org")) is False
    assert result(roster.get_items("alice@example.org")) == []
    assert result(offline.count("alice@example.org")) == 0
    with pytest.raises(NoSuchAccount):
        result(manager.remove("alice@example.org"))


def test_list_and_exists(manager):
    result(manager.register("bob@example.org", "x"))
    result(manager.register("alice@example.org", "x"))
    assert result(manager.list(DOMAIN)) == ["alice@example.org", "bob@example.org"]
    assert result(manager.list()) == ["alice@example.org", "bob@example.org"]
    assert result(manager.exists("ALICE@example.org")) is True
    assert result(manager.exists("not a jid@")) is False


@pytest.mark.parametrize("jid", ["example.org", "alice@example.org/phone", "@example.org", "a@b@c", ""])
def test_jid_without_localpart_or_with_resource_is_refused(manager, jid):
    with pytest.raises(InvalidAccountJID):
        result(manager.register(jid, "secret"))


def test_jid_of_a_domain_not_hosted_is_refused(manager):
    with pytest.raises(DomainNotHosted):
        result(manager.register("alice@elsewhere.org", "secret"))


@pytest.mark.parametrize("password", ["", "\u00ad", "bell\u0007", "x" * 1025])
def test_unusable_password_is_refused(manager, password):
    with pytest.raises(InvalidPassword):
        result(manager.register("alice@example.org", password))


def test_prepare_account_jid_prepares():
    assert prepare_account_jid(" Alice@EXAMPLE.org ") == "alice@example.org"
