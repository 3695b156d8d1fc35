"""The LDAP authenticator without a directory: escaping, verdicts, deadlines, the pool, account rows, logs.

The directory itself (binds, searches, TLS, hostile names against a real slapd) is
tested in tests/integration/test_ldap.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from tigasepy.auth.ldap import (
    AMBIGUOUS,
    DENIED,
    INVALID,
    OK,
    DirectoryUnavailable,
    LdapAuthenticator,
    LdapSettings,
    escape_dn_value,
    escape_filter_value,
    fill,
    security_warnings,
)
from tigasepy.interfaces import IAuthenticator, SaslContext, SaslFailure, SaslSuccess
from tigasepy.storage.interfaces import StorageUnavailable
from tigasepy.storage.memory import MemoryAccountStore

DOMAIN = "example.org"
TLS = SaslContext(domain=DOMAIN, secure=True, peer="127.0.0.1:5")
SECRET = "s3cr3t-pässword"


def result(d: defer.Deferred):
    out = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def condition(d: defer.Deferred) -> str:
    with pytest.raises(SaslFailure) as info:
        result(d)
    return info.value.condition


# -- escaping ------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,escaped", [
    ("alice", "alice"),
    ("*", "\\2a"),
    (")(uid=*", "\\29\\28uid=\\2a"),
    ("\\", "\\5c"),
    ("a\0b", "a\\00b"),
    ("*)(|(objectClass=*)", "\\2a\\29\\28|\\28objectClass=\\2a\\29"),
    ("jürgen", "jürgen"),
])
def test_filter_values_are_escaped_per_rfc4515(raw, escaped):
    assert escape_filter_value(raw) == escaped


@pytest.mark.parametrize("raw,escaped", [
    ("alice", "alice"),
    ("x,y", "x\\,y"),
    ("a+b", "a\\+b"),
    ("admin,ou=admins", "admin\\,ou\\=admins"),
    ('q"uote', 'q\\"uote'),
    ("back\\slash", "back\\\\slash"),
    ("<tag>;", "\\<tag\\>\\;"),
    ("#hash", "\\#hash"),
    ("mid#hash", "mid#hash"),
    (" lead", "\\ lead"),
    ("trail ", "trail\\ "),
    ("a\0b", "a\\00b"),
    ("*", "*"),
])
def test_dn_values_are_escaped_per_rfc4514(raw, escaped):
    assert escape_dn_value(raw) == escaped


def test_fill_replaces_only_the_user_placeholder():
    assert fill("(&(uid={user})(x={other}))", "a\\2a") == "(&(uid=a\\2a)(x={other}))"
    assert fill("uid={user},dc=x", "{user}") == "uid={user},dc=x"  # no second pass


# -- the authenticator over a fake directory ----------------------------------------------------

class FakeDirectory:
    """Answers checks from a table; ``hold`` keeps answers back until released."""

    where = "ldaps://ldap.test"

    def __init__(self) -> None:
        self.verdicts: dict[str, Any] = {}
        self.calls: list[tuple[str, str]] = []
        self.closed: list[Any] = []

    def check(self, slot: Any, username: str, password: str) -> tuple[str, str]:
        self.calls.append((username, password))
        verdict = self.verdicts.get(username, INVALID)
        if isinstance(verdict, Exception):
            raise verdict
        if verdict == OK and password != "right":
            return INVALID, f"uid={username}"
        slot.connection = object()  # as if a connection had been opened
        return verdict, f"uid={username}"

    def close(self, slot: Any) -> None:
        self.closed.append(slot.connection)
        slot.connection = None


class Runner:
    """A ``run_blocking`` that runs at once, or holds calls until ``release``."""

    def __init__(self) -> None:
        self.hold = False
        self.held: list[tuple[defer.Deferred, Any, tuple]] = []

    def __call__(self, fn: Any, *args: Any) -> defer.Deferred:
        if not self.hold:
            return defer.maybeDeferred(fn, *args)
        d: defer.Deferred = defer.Deferred()
        self.held.append((d, fn, args))
        return d

    def release(self) -> None:
        held, self.held = self.held, []
        for d, fn, args in held:
            defer.maybeDeferred(fn, *args).chainDeferred(d)


SETTINGS = LdapSettings(urls=("ldaps://ldap.test",), dn_template="uid={user},dc=test", timeout_s=2.0,
                        pool_size=2)


@pytest.fixture
def world():
    clock, runner, directory, store = Clock(), Runner(), FakeDirectory(), MemoryAccountStore()
    authenticator = LdapAuthenticator(SETTINGS, clock, runner, accounts=store, directory=directory)
    return clock, runner, directory, store, authenticator


def login(authenticator, user="alice", password="right"):
    return authenticator.start("PLAIN", TLS).step(f"\0{user}\0{password}".encode())


def test_provides_iauthenticator_and_offers_plain_only(world):
    *_, authenticator = world
    assert verifyObject(IAuthenticator, authenticator)
    assert authenticator.mechanisms(TLS) == ["PLAIN"]
    with pytest.raises(SaslFailure) as info:
        authenticator.start("SCRAM-SHA-1", TLS)
    assert info.value.condition == "invalid-mechanism"


def test_right_password_succeeds_and_creates_the_account_row(world):
    _clock, _runner, directory, store, authenticator = world
    directory.verdicts["alice"] = OK
    assert result(login(authenticator)) == SaslSuccess(username="alice")
    assert result(store.exists(f"alice@{DOMAIN}")) is True
    assert result(store.get_credential(f"alice@{DOMAIN}", "SHA-1")) is None  # no SCRAM keys
    assert result(login(authenticator)).username == "alice"  # the row exists already: fine


def test_the_username_reaching_the_directory_is_nodeprepped(world):
    _clock, _runner, directory, _store, authenticator = world
    directory.verdicts["alice"] = OK
    assert result(login(authenticator, user="ALICE")).username == "alice"
    assert directory.calls == [("alice", "right")]


def test_wrong_password_unknown_user_and_denied_are_not_authorized(world, log_events):
    _clock, _runner, directory, store, authenticator = world
    directory.verdicts.update(alice=OK, bob=DENIED, eve=AMBIGUOUS)
    assert condition(login(authenticator, "alice", "wrong")) == "not-authorized"
    assert condition(login(authenticator, "nobody")) == "not-authorized"
    assert condition(login(authenticator, "bob")) == "not-authorized"
    assert condition(login(authenticator, "eve")) == "not-authorized"
    assert result(store.list_accounts()) == []
    texts = [e.get("log_format", "") for e in log_events]
    assert any("may not log in" in t for t in texts)
    assert any("several entries" in t for t in texts)


def test_outage_is_temporary_with_one_warning_and_recovery_is_logged(world, log_events):
    _clock, _runner, directory, _store, authenticator = world
    directory.verdicts["alice"] = DirectoryUnavailable("connection refused")
    assert condition(login(authenticator)) == "temporary-auth-failure"
    warnings = [e for e in log_events if e.get("log_level") is not None and e["log_level"].name == "warn"]
    assert len(warnings) == 1
    assert "unavailable" in warnings[0]["log_format"] and str(warnings[0]["reason"]) == "connection refused"
    directory.verdicts["alice"] = OK
    assert result(login(authenticator)).username == "alice"
    assert any("available again" in e.get("log_format", "") for e in log_events)


def test_an_unexpected_error_is_temporary_too(world):
    _clock, _runner, directory, _store, authenticator = world
    directory.verdicts["alice"] = RuntimeError("bug")
    assert condition(login(authenticator)) == "temporary-auth-failure"


def test_no_log_event_carries_the_password(world, log_events):
    _clock, _runner, directory, _store, authenticator = world
    for verdict in (OK, DENIED, DirectoryUnavailable("down"), RuntimeError("bug")):
        directory.verdicts["alice"] = verdict
        login(authenticator, "alice", SECRET).addErrback(lambda _: None)
    assert log_events
    for event in log_events:
        assert SECRET not in repr(event)


def test_deadline_fails_closed_and_a_late_answer_returns_the_connection(world):
    clock, runner, directory, _store, authenticator = world
    directory.verdicts["alice"] = OK
    runner.hold = True
    d = login(authenticator)
    assert not d.called
    clock.advance(SETTINGS.timeout_s)
    assert condition(d) == "temporary-auth-failure"
    runner.release()  # the directory answers after all: dropped, slot back in the pool
    runner.hold = False
    assert result(login(authenticator)).username == "alice"
    assert result(login(authenticator)).username == "alice"


def test_the_pool_bounds_concurrent_checks_and_waiting_ones_time_out(world):
    clock, runner, directory, _store, authenticator = world
    directory.verdicts["alice"] = OK
    runner.hold = True
    first, second = login(authenticator), login(authenticator)
    third = login(authenticator)  # pool_size = 2: waits for a connection
    assert len(runner.held) == 2
    clock.advance(1.0)
    runner.release()
    assert result(first).username == result(second).username == "alice"
    assert len(runner.held) == 1  # the third got a connection as soon as one was free
    clock.advance(SETTINGS.timeout_s)
    assert condition(third) == "temporary-auth-failure"
    runner.hold = False
    runner.release()
    assert result(login(authenticator)).username == "alice"


def test_a_check_that_never_gets_a_connection_fails_at_the_deadline(world, log_events):
    clock, runner, directory, _store, authenticator = world
    directory.verdicts["alice"] = OK
    runner.hold = True
    held = [login(authenticator) for _ in range(2)]
    waiting = login(authenticator)
    clock.advance(SETTINGS.timeout_s)
    assert [condition(d) for d in held + [waiting]] == ["temporary-auth-failure"] * 3
    assert any("no free connection" in str(e.get("reason")) for e in log_events)
    runner.hold = False
    runner.release()
    assert result(login(authenticator)).username == "alice"


def test_account_row_failure_is_temporary(world):
    _clock, _runner, directory, store, authenticator = world
    directory.verdicts["alice"] = OK

    def down(jid, credentials):
        return defer.fail(StorageUnavailable("database down"))

    store.create = down
    assert condition(login(authenticator)) == "temporary-auth-failure"


def test_without_an_account_store_no_row_is_made():
    directory = FakeDirectory()
    directory.verdicts["alice"] = OK
    authenticator = LdapAuthenticator(SETTINGS, Clock(), Runner(), directory=directory)
    assert result(login(authenticator)).username == "alice"


def test_close_closes_idle_connections(world):
    _clock, _runner, directory, _store, authenticator = world
    directory.verdicts["alice"] = OK
    result(login(authenticator))
    result(authenticator.close())
    assert len(directory.closed) == 1


def test_settings_never_show_the_service_password():
    settings = LdapSettings(urls=("ldaps://x",), bind_password="service-secret")
    assert "service-secret" not in repr(settings) and "service-secret" not in str(settings)


def test_security_warnings():
    assert security_warnings(SETTINGS) == []
    relaxed = LdapSettings(urls=("ldap://127.0.0.1",), starttls=False, tls_verify=False)
    assert len(security_warnings(relaxed)) == 2


def test_a_runner_that_raises_gives_the_slot_back(world):
    clock, _runner, directory, store, _authenticator = world
    directory.verdicts["alice"] = OK
    calls = []

    def broken(fn, *args):
        calls.append(fn)
        if len(calls) <= SETTINGS.pool_size:
            raise RuntimeError("thread pool stopped")
        return defer.maybeDeferred(fn, *args)

    authenticator = LdapAuthenticator(SETTINGS, clock, broken, accounts=store, directory=directory)
    for _ in range(SETTINGS.pool_size):
        assert condition(login(authenticator)) == "temporary-auth-failure"
    assert result(login(authenticator)).username == "alice"
