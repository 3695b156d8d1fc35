"""The LDAP authenticator against a real OpenLDAP ``slapd`` (its own instance, see support/slapd.py).

Two layers:

- the directory client (``LdapDirectory.check``, blocking, called directly): binds,
  search-then-bind, the group and filter checks, escaping of hostile user names in
  DNs and filters, StartTLS / LDAPS and their certificate checks, outages and timeouts;
- whole logins with slixmpp over TLS against a tigasepy server whose hosts
  authenticate with LDAP (alone or chained with internal accounts), including a
  directory that goes down and comes back.

slapd and ldap-utils come from Debian (``apt-get install slapd ldap-utils``); when they
are missing the tests skip (and fail under CI=true, where ``.ci/run`` installs them).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from support.server import start_server
from support.slapd import (
    GROUP_DN,
    PEOPLE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SUFFIX,
    USERS,
    Slapd,
    binaries_available,
    start_slapd,
)
from support.xmpp_clients import (
    ClientPool,
    LoginFailed,
    TestClient,
    asyncio_test,
    feature_mechanisms,
    from_deferred,
    roster_items,
)
from tigasepy.auth.ldap import (
    AMBIGUOUS,
    DENIED,
    INVALID,
    OK,
    DirectoryUnavailable,
    LdapAuthenticator,
    LdapDirectory,
    LdapSettings,
    _Slot,
)
from tigasepy.auth.plain import in_thread_pool
from tigasepy.interfaces import SaslContext, SaslFailure
from tigasepy.storage.interfaces import IAccountStore

pytestmark = pytest.mark.filterwarnings("ignore:ssl.match_hostname:DeprecationWarning")  # ldap3 on 3.11

DN_TEMPLATE = f"uid={{user}},{PEOPLE}"
ALICE_PW = USERS["alice"]

#: User names that must never match anybody (filter and DN injection attempts).
HOSTILE = ["*", ")(uid=*", "*)(uid=alice", "alice)(|(uid=*", "alice*", "al*ce", "\\", "\\2a", "a\0b",
           "alice\0", "uid=alice,ou=people", "alice,ou=people,dc=example,dc=org", " alice", "alice ",
           "al ice", "alice\t", "\u200balice", "#alice", "alice+cn=alice", "(alice)", "alice)", "*)(|(objectClass=*)"]


# -- fixtures ------------------------------------------------------------------------------------

def _missing_reason() -> str | None:
    missing = binaries_available()
    return f"OpenLDAP is not installed ({missing}): apt-get install slapd ldap-utils" if missing else None


@pytest.fixture(scope="module")
def _shared_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd | str]:
    reason = _missing_reason()
    if reason:
        yield reason
        return
    server = start_slapd(tmp_path_factory.mktemp("slapd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def slapd(_shared_slapd: Slapd | str, missing_service: Any) -> Slapd:
    """The module's slapd (seeded, StartTLS and LDAPS); do not stop it in a test."""
    if isinstance(_shared_slapd, str):
        missing_service(_shared_slapd)
    return _shared_slapd


@pytest.fixture
def own_slapd(tmp_path: Path, missing_service: Any) -> Iterator[Slapd]:
    """A slapd of this test's own, which the test may stop and start again."""
    reason = _missing_reason()
    if reason:
        missing_service(reason)
    server = start_slapd(tmp_path / "slapd")
    try:
        yield server
    finally:
        server.stop()


def settings(slapd: Slapd, **overrides: Any) -> LdapSettings:
    """Direct bind over StartTLS with the test CA, group check on; ``overrides`` change it."""
    values: dict[str, Any] = dict(urls=(slapd.url,), dn_template=DN_TEMPLATE, ca_file=str(slapd.tls.ca),
                                  group_dn=GROUP_DN, connect_timeout_s=2.0, timeout_s=5.0)
    if overrides.get("bind_mode") == "search":
        values.update(search_base=SUFFIX, bind_dn=SERVICE_DN, bind_password=SERVICE_PASSWORD)
    values.update(overrides)
    return LdapSettings(**values)


def check(config: LdapSettings, user: str, password: str) -> str:
    """One blocking check on a fresh connection; the verdict."""
    directory = LdapDirectory(config)
    slot = _Slot(None)
    try:
        return directory.check(slot, user, password)[0]
    finally:
        directory.close(slot)


MODES = [pytest.param({}, id="direct"), pytest.param({"bind_mode": "search"}, id="search")]


# -- the directory client -----------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_right_password_wrong_password_and_unknown_user(slapd: Slapd, mode: dict) -> None:
    config = settings(slapd, **mode)
    assert check(config, "alice", ALICE_PW) == OK
    assert check(config, "alice", "wrong") == INVALID
    assert check(config, "alice", USERS["bob"]) == INVALID
    assert check(config, "nobody", ALICE_PW) == INVALID


@pytest.mark.parametrize("mode", MODES)
def test_an_empty_password_never_binds(slapd: Slapd, mode: dict) -> None:
    """RFC 4513 5.1.2: a simple bind with a DN and no password is an anonymous bind that
    'succeeds' on many servers; it must never count as a login."""
    assert check(settings(slapd, **mode), "alice", "") == INVALID


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("user", HOSTILE)
def test_hostile_user_names_match_nobody(slapd: Slapd, mode: dict, user: str) -> None:
    config = settings(slapd, **mode, group_dn="")
    assert check(config, user, ALICE_PW) == INVALID


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("user", ["x,y", "q(1)*"])
def test_names_with_special_characters_are_escaped_not_refused(slapd: Slapd, mode: dict, user: str) -> None:
    """uid 'x,y' needs DN escaping, 'q(1)*' filter escaping: both must still log in."""
    config = settings(slapd, **mode)
    assert check(config, user, USERS[user]) == OK
    assert check(config, user, "wrong") == INVALID


@pytest.mark.parametrize("mode", MODES)
def test_group_limits_who_may_log_in(slapd: Slapd, mode: dict) -> None:
    assert check(settings(slapd, **mode), "bob", USERS["bob"]) == DENIED
    assert check(settings(slapd, **mode, group_dn=""), "bob", USERS["bob"]) == OK


@pytest.mark.parametrize("mode", MODES)
def test_require_filter_limits_who_may_log_in(slapd: Slapd, mode: dict) -> None:
    config = settings(slapd, **mode, require_filter="(!(description=disabled))")
    assert check(config, "carol", USERS["carol"]) == DENIED
    assert check(config, "alice", ALICE_PW) == OK


def test_require_filter_may_use_the_user_name(slapd: Slapd) -> None:
    config = settings(slapd, group_dn="", require_filter="(&(objectClass=inetOrgPerson)(cn={user}))")
    assert check(config, "alice", ALICE_PW) == OK
    assert check(config, "q(1)*", USERS["q(1)*"]) == OK


def test_a_missing_group_fails_closed(slapd: Slapd) -> None:
    with pytest.raises(DirectoryUnavailable, match="not found"):
        check(settings(slapd, group_dn=f"cn=nope,ou=groups,{SUFFIX}"), "alice", ALICE_PW)


def test_search_matching_several_entries_is_refused(slapd: Slapd) -> None:
    config = settings(slapd, bind_mode="search", group_dn="",
                      search_filter="(|(uid={user})(objectClass=inetOrgPerson))")
    assert check(config, "alice", ALICE_PW) == AMBIGUOUS


def test_wrong_service_password_fails_closed(slapd: Slapd) -> None:
    config = settings(slapd, bind_mode="search", bind_password="not-the-service-password")
    with pytest.raises(DirectoryUnavailable, match="service account .* cannot bind"):
        check(config, "alice", ALICE_PW)


def test_starttls_is_used_and_the_connection_is_reused(slapd: Slapd) -> None:
    directory = LdapDirectory(settings(slapd, bind_mode="search"))
    slot = _Slot(None)
    try:
        assert directory.check(slot, "alice", ALICE_PW)[0] == OK
        connection = slot.connection
        assert connection.ldap.tls_started and not connection.ldap.server.ssl
        assert directory.check(slot, "x,y", USERS["x,y"])[0] == OK
        assert directory.check(slot, "alice", "wrong")[0] == INVALID
        assert directory.check(slot, "alice", ALICE_PW)[0] == OK
        assert slot.connection is connection, "the pooled connection was replaced"
    finally:
        directory.close(slot)


def test_ldaps_with_the_right_ca(slapd: Slapd) -> None:
    assert check(settings(slapd, urls=(slapd.ldaps_url,)), "alice", ALICE_PW) == OK


@pytest.mark.parametrize("which", ["starttls", "ldaps"])
def test_a_certificate_from_another_ca_is_refused(slapd: Slapd, which: str) -> None:
    url = slapd.url if which == "starttls" else slapd.ldaps_url
    config = settings(slapd, urls=(url,), ca_file=str(slapd.tls.other_ca))
    with pytest.raises(DirectoryUnavailable, match="certificate verify failed"):
        check(config, "alice", ALICE_PW)


@pytest.mark.parametrize("which", ["starttls", "ldaps"])
def test_a_certificate_for_another_name_is_refused(slapd: Slapd, which: str) -> None:
    """The certificate names 'localhost'; reaching the directory as 127.0.0.1 must fail."""
    url = slapd.ip_url if which == "starttls" else f"ldaps://127.0.0.1:{slapd.ldaps_port}"
    with pytest.raises(DirectoryUnavailable, match="doesn't match"):
        check(settings(slapd, urls=(url,)), "alice", ALICE_PW)


def test_tls_verify_false_accepts_any_certificate(slapd: Slapd) -> None:
    config = settings(slapd, urls=(slapd.ip_url,), ca_file=str(slapd.tls.other_ca), tls_verify=False)
    assert check(config, "alice", ALICE_PW) == OK


def test_plain_ldap_on_loopback_without_starttls(slapd: Slapd) -> None:
    assert check(settings(slapd, urls=(slapd.ip_url,), starttls=False), "alice", ALICE_PW) == OK


def test_the_second_url_is_used_when_the_first_is_down(slapd: Slapd) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"ldap://localhost:{closed.getsockname()[1]}"
    assert check(settings(slapd, urls=(dead, slapd.url)), "alice", ALICE_PW) == OK


def test_a_directory_that_is_down_is_unavailable_at_once(slapd: Slapd) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(DirectoryUnavailable):
        check(settings(slapd, urls=(f"ldap://localhost:{port}",)), "alice", ALICE_PW)
    assert time.monotonic() - started < 2


def test_a_dropped_pooled_connection_is_replaced_without_an_error(own_slapd: Slapd) -> None:
    directory = LdapDirectory(settings(own_slapd))
    slot = _Slot(None)
    try:
        assert directory.check(slot, "alice", ALICE_PW)[0] == OK
        stale = slot.connection
        own_slapd.stop()
        own_slapd.start()
        assert directory.check(slot, "alice", ALICE_PW)[0] == OK
        assert slot.connection is not stale
    finally:
        directory.close(slot)


# -- the authenticator on the reactor: deadlines -------------------------------------------------

class Blackhole:
    """A TCP listener that accepts connections and never answers (a hung directory)."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.port = self.socket.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        for connection in self.accepted:
            connection.close()
        self.socket.close()


@pytest_twisted.ensureDeferred
async def test_a_hung_directory_fails_closed_at_the_deadline(slapd: Slapd, log_events: list) -> None:
    from twisted.internet import reactor

    hole = Blackhole()
    try:
        config = settings(slapd, urls=(f"ldap://localhost:{hole.port}",), timeout_s=0.5)
        authenticator = LdapAuthenticator(config, reactor, in_thread_pool(reactor))
        started = time.monotonic()
        exchange = authenticator.start("PLAIN", SaslContext(domain="localhost", secure=True))
        with pytest.raises(SaslFailure) as failure:
            await exchange.step(f"\0alice\0{ALICE_PW}".encode())
        elapsed = time.monotonic() - started
        assert failure.value.condition == "temporary-auth-failure"
        assert 0.4 < elapsed < 2.0, elapsed
        lines = [e for e in log_events if "unavailable" in e.get("log_format", "")]
        assert len(lines) == 1 and "no answer within 0.5 s" in str(lines[0]["reason"])
        assert all(ALICE_PW not in repr(e) for e in log_events)
    finally:
        hole.close()  # the worker thread still waiting gets EOF and returns its pool slot


# -- logins over XMPP -----------------------------------------------------------------------------

@pytest.fixture
def ldap_extra() -> dict[str, Any]:
    """Options merged over the test's [auth.ldap] table (parametrize to change them)."""
    return {}


@pytest.fixture
def auth_extra() -> dict[str, Any]:
    """Options merged over the test's [auth] table (parametrize to change them)."""
    return {}


def ldap_table(slapd: Slapd, tmp_path: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """An [auth.ldap] table for ``slapd``; ``extra`` overrides (``ldaps: True``: its LDAPS URL)."""
    extra = dict(extra)
    table: dict[str, Any] = {"urls": [slapd.ldaps_url if extra.pop("ldaps", False) else slapd.url], "ca_file": str(slapd.tls.ca), "dn_template": DN_TEMPLATE,
                             "group_dn": GROUP_DN, "connect_timeout_s": 1.0, "timeout_s": 3.0}
    if extra.get("bind_mode") == "search":
        password_file = tmp_path / "ldap-service-password"
        password_file.write_text(SERVICE_PASSWORD + "\n")
        table.update(search_base=SUFFIX, bind_dn=SERVICE_DN, bind_password_file=str(password_file))
    table.update(extra)
    return table


@pytest.fixture
def server_overrides(slapd: Slapd, tmp_path: Path, ldap_extra: dict[str, Any],
                     auth_extra: dict[str, Any]) -> dict[str, Any]:
    """localhost authenticates with the slapd only (unless ``auth_extra`` says otherwise)."""
    return {"auth": {"authenticators": ["ldap"], **auth_extra, "ldap": ldap_table(slapd, tmp_path, ldap_extra)}}


@pytest.fixture
def pool(xmpp_server: Any) -> Iterator[ClientPool]:
    from support.xmpp_clients import run_in_reactor

    clients = ClientPool(xmpp_server)
    try:
        yield clients
    finally:
        run_in_reactor(clients.close_all)


async def login(pool: ClientPool, user: str, password: str, **kwargs: Any) -> TestClient:
    client = pool.new(user, password, **kwargs)
    await client.login(pool.server.c2s_port)
    return client


async def login_fails(pool: ClientPool, user: str, password: str, **kwargs: Any) -> str:
    client = pool.new(user, password, **kwargs)
    with pytest.raises(LoginFailed) as failed:
        await client.login(pool.server.c2s_port)
    return failed.value.reason


@asyncio_test
async def test_directory_user_logs_in_with_plain_over_tls(pool: ClientPool, log_events: list) -> None:
    """An LDAP-only host offers PLAIN only, after STARTTLS; alice (only in the directory)
    logs in, gets an account row without credentials, and a roster that persists."""
    server = pool.server
    accounts = server.service.stores.get(IAccountStore)
    assert not await from_deferred(accounts.exists("alice@localhost"))
    alice = await login(pool, "alice", ALICE_PW, resource="one")
    assert alice.secure
    features = alice.stream_features.items
    assert feature_mechanisms(features[0]) == []  # nothing before TLS
    assert feature_mechanisms(features[1]) == ["PLAIN"]
    assert await from_deferred(accounts.exists("alice@localhost"))
    assert await from_deferred(accounts.get_credential("alice@localhost", "SHA-256")) is None
    alice.update_roster("bob@localhost", name="Bob")
    await alice.ping_server()
    await alice.close()
    again = await login(pool, "alice", ALICE_PW, resource="two")
    assert roster_items(await again.get_roster()) .get("bob@localhost", {}).get("name") == "Bob"
    assert any(e.get("log_format", "").startswith("account {jid} created") for e in log_events)
    assert all(ALICE_PW not in repr(e) for e in log_events)


@asyncio_test
async def test_messages_to_an_offline_directory_user_are_kept(pool: ClientPool) -> None:
    """After the first login the directory user counts as an account: offline storage."""
    alice = await login(pool, "alice", ALICE_PW, resource="a")
    await alice.close()
    xy = await login(pool, "x,y", USERS["x,y"], resource="b")
    xy.send_message(mto="alice@localhost", mbody="while you were out", mtype="chat")
    await xy.ping_server()
    alice = await login(pool, "alice", ALICE_PW, resource="c")
    alice.send_presence()
    got = await alice.messages.wait_for(lambda m: m["body"] == "while you were out", what="the offline message")
    assert got["from"].bare == "x,y@localhost"


@asyncio_test
async def test_wrong_password_unknown_user_and_outsiders_are_not_authorized(pool: ClientPool) -> None:
    assert "not-authorized" in await login_fails(pool, "alice", "wrong-password")
    assert "not-authorized" in await login_fails(pool, "nobody", ALICE_PW)
    assert "not-authorized" in await login_fails(pool, "bob", USERS["bob"])  # not in the group
    assert "not-authorized" in await login_fails(pool, "*", ALICE_PW)
    assert not await from_deferred(pool.server.service.stores.get(IAccountStore).exists("bob@localhost"))


@pytest.mark.parametrize("ldap_extra", [{"bind_mode": "search"}])
@asyncio_test
async def test_search_then_bind_login(pool: ClientPool, ldap_extra: dict) -> None:
    alice = await login(pool, "alice", ALICE_PW)
    assert alice.boundjid.bare == "alice@localhost"
    assert "not-authorized" in await login_fails(pool, "bob", USERS["bob"])


@pytest.mark.parametrize("ldap_extra", [{"bind_mode": "search", "ldaps": True}])
@asyncio_test
async def test_login_through_ldaps(pool: ClientPool, slapd: Slapd, ldap_extra: dict) -> None:
    assert pool.server.config.auth.ldap.urls == (slapd.ldaps_url,)
    await login(pool, "q(1)*", USERS["q(1)*"])


@pytest.mark.parametrize("auth_extra", [{"authenticators": ["ldap", "internal"]}])
@asyncio_test
async def test_chain_of_directory_and_internal_accounts(pool: ClientPool, auth_extra: dict) -> None:
    """LDAP first, internal second: internal accounts keep SCRAM, directory users use PLAIN,
    and a wrong password tried on both is not-authorized."""
    server = pool.server
    await from_deferred(server.create_account("dave", "dave-internal-pw"))
    dave = await login(pool, "dave", "dave-internal-pw")
    mechanisms = feature_mechanisms(dave.stream_features.items[1])
    assert mechanisms[0].startswith("SCRAM-") and mechanisms[-1] == "PLAIN"
    await login(pool, "alice", ALICE_PW, mechanism="PLAIN")
    await login(pool, "dave", "dave-internal-pw", mechanism="PLAIN")
    assert "not-authorized" in await login_fails(pool, "alice", "wrong", mechanism="PLAIN")
    # A directory user has no SCRAM keys: SCRAM with the directory password fails.
    assert "not-authorized" in await login_fails(pool, "alice", ALICE_PW, mechanism="SCRAM-SHA-1")


@asyncio_test(timeout=60)
async def test_directory_down_is_temporary_and_logins_recover(own_slapd: Slapd, tmp_path: Path,
                                                              log_events: list) -> None:
    """slapd stops: logins get temporary-auth-failure and one warning line each; slapd
    comes back: the next login works, on a fresh connection, with no restart of tigasepy."""
    from twisted.internet import reactor

    overrides = {"auth": {"authenticators": ["ldap"],
                          "ldap": ldap_table(own_slapd, tmp_path, {"timeout_s": 2.0})}}
    server = await from_deferred(start_server((tmp_path / "data").resolve(), reactor, overrides), timeout=10)
    clients = ClientPool(server)
    try:
        first = await login(clients, "alice", ALICE_PW)  # leaves a pooled connection behind
        await first.close()
        own_slapd.stop()
        started = time.monotonic()
        reason = await login_fails(clients, "alice", ALICE_PW)
        assert "temporary-auth-failure" in reason
        assert time.monotonic() - started < 3
        warnings = [e for e in log_events if "LDAP directory {where} unavailable" in e.get("log_format", "")]
        assert len(warnings) == 1
        assert "temporary-auth-failure" in await login_fails(clients, "alice", ALICE_PW)
        own_slapd.start()
        again = await login(clients, "alice", ALICE_PW)
        assert again.boundjid.bare == "alice@localhost"
        assert any("available again" in e.get("log_format", "") for e in log_events)
        assert all(ALICE_PW not in repr(e) for e in log_events)
    finally:
        await clients.close_all()
        await from_deferred(server.stop(), timeout=10)

