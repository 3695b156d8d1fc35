"""TLS and SASL over real sockets: STARTTLS, direct TLS, SCRAM (plain and -PLUS), PLAIN.

slixmpp is the client where it can do the job; the raw client (``support.raw_xmpp``)
does what slixmpp cannot: authenticate in plain text on purpose, and SCRAM -PLUS with
``tls-exporter``/``tls-server-end-point`` (Python's ``ssl`` exports only ``tls-unique``).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest
from OpenSSL import SSL

from support.raw_xmpp import SASL_NS, RawXmppClient, StreamClosed, as_text, tag
from support.server import RunningServer
from support.xmpp_clients import (
    ClientPool, LoginFailed, asyncio_test, feature_mechanisms,
)

TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"


def authenticated_mechanisms(log_events: list[dict[str, Any]]) -> list[str]:
    """The mechanisms the server logged successful authentications with."""
    return [e["mechanism"] for e in log_events
            if e.get("log_format", "").startswith("{user}@{domain} authenticated with")]


def raw(server: RunningServer, **kwargs: Any) -> RawXmppClient:
    """A raw client to the STARTTLS port that trusts the server's certificate."""
    return RawXmppClient(server.c2s_port, domain=server.domain, cafile=server.certificate_path, **kwargs)


# -- TLS ------------------------------------------------------------------------------------

@asyncio_test
async def test_starttls_is_negotiated_before_login_and_the_stream_is_encrypted(
        clients: ClientPool, log_events: list[dict[str, Any]]) -> None:
    """slixmpp on the STARTTLS port sees STARTTLS required, upgrades, verifies the generated
    certificate for 'localhost', and only then authenticates."""
    alice = await clients.login("alice", resource="tls")
    assert alice.secure, f"stream not encrypted: {alice.socket!r}"
    assert alice.tls_version in ("TLSv1.2", "TLSv1.3")
    first_features = alice.stream_features.items[0]
    starttls = first_features.find(f"{{{TLS_NS}}}starttls")
    assert starttls is not None and starttls.find(f"{{{TLS_NS}}}required") is not None
    assert feature_mechanisms(first_features) == [], "SASL offered before TLS"
    mechanisms_after_tls = feature_mechanisms(alice.stream_features.items[1])
    assert "SCRAM-SHA-256" in mechanisms_after_tls and "PLAIN" in mechanisms_after_tls
    [used] = authenticated_mechanisms(log_events)
    assert used.startswith("SCRAM-SHA-256"), used


@asyncio_test
async def test_client_refusing_starttls_is_offered_no_sasl_mechanism(clients: ClientPool) -> None:
    """A slixmpp client with STARTTLS turned off gets STARTTLS-required features without any
    SASL mechanism, so it cannot log in."""
    bob = clients.new("bob")
    outcome = bob.start_connect(clients.server.c2s_port, starttls=False)
    features = await bob.stream_features.wait_for(what="stream features")
    assert features.find(f"{{{TLS_NS}}}starttls/{{{TLS_NS}}}required") is not None
    assert feature_mechanisms(features) == []
    assert not outcome.done() or isinstance(outcome.exception(), LoginFailed)
    assert not bob.session_started
    assert not bob.secure


def _plaintext_auth_attempt(server: RunningServer, user: str, password: str) -> str:
    client = raw(server)
    try:
        features = client.open()
        assert client.mechanisms() == [], as_text(features)
        result = client.auth_plain(user, password)
        assert result.tag == tag(SASL_NS, "failure"), as_text(result)
        return result[0].tag.split("}", 1)[1]
    finally:
        client.close()


@asyncio_test
async def test_sasl_before_starttls_fails_with_encryption_required(
        xmpp_server: RunningServer, accounts: dict[str, str]) -> None:
    """Right credentials sent with PLAIN on the unencrypted stream are refused with
    <encryption-required/> (RFC 6120 6.4.5 / 5.3.1)."""
    condition = await asyncio.to_thread(_plaintext_auth_attempt, xmpp_server, "alice", accounts["alice"])
    assert condition == "encryption-required"


# -- SCRAM and PLAIN ------------------------------------------------------------------------

@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
@asyncio_test
async def test_scram_login_succeeds_with_the_forced_mechanism(
        clients: ClientPool, log_events: list[dict[str, Any]], mechanism: str) -> None:
    """slixmpp logs in with exactly the SCRAM mechanism it was told to use."""
    alice = clients.new("alice", resource="scram", mechanism=mechanism)
    await alice.login(clients.server.c2s_port)
    assert alice.plugin["feature_mechanisms"].mech.name == mechanism
    assert authenticated_mechanisms(log_events) == [mechanism]
    await alice.ping_server()


@asyncio_test
async def test_plain_login_over_tls_succeeds(clients: ClientPool,
                                             log_events: list[dict[str, Any]]) -> None:
    """PLAIN is offered and works once the stream is encrypted."""
    bob = clients.new("bob", resource="plain", mechanism="PLAIN")
    await bob.login(clients.server.c2s_port)
    assert authenticated_mechanisms(log_events) == ["PLAIN"]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
@asyncio_test
async def test_wrong_password_fails_with_not_authorized(clients: ClientPool, mechanism: str) -> None:
    """A wrong password gets <not-authorized/> and no session."""
    alice = clients.new("alice", "not-the-password", mechanism=mechanism)
    with pytest.raises(LoginFailed):
        await alice.login(clients.server.c2s_port)
    assert await alice.sasl_failures.wait_for(what="SASL failure") == "not-authorized"
    assert clients.server.sessions_of("alice") == []


@asyncio_test
async def test_unknown_user_fails_like_a_wrong_password(clients: ClientPool) -> None:
    """SCRAM for an account that does not exist fails with the same <not-authorized/>."""
    mallory = clients.new("mallory", "whatever", mechanism="SCRAM-SHA-256")
    with pytest.raises(LoginFailed):
        await mallory.login(clients.server.c2s_port)
    assert await mallory.sasl_failures.wait_for(what="SASL failure") == "not-authorized"


def _three_bad_passwords(server: RunningServer) -> tuple[list[str], StreamClosed]:
    client = raw(server)
    try:
        client.open()
        client.starttls()
        conditions = []
        for attempt in range(3):
            result = client.auth("PLAIN", f"\0alice\0wrong-{attempt}".encode())
            assert result.tag == tag(SASL_NS, "failure"), as_text(result)
            conditions.append(result[0].tag.split("}", 1)[1])
        return conditions, client.read_until_closed()
    finally:
        client.close()


@asyncio_test
async def test_stream_closes_after_max_auth_failures(xmpp_server: RunningServer,
                                                     accounts: dict[str, str]) -> None:
    """After c2s.max_auth_failures (3) failed attempts the server ends the stream with
    <policy-violation/>."""
    conditions, closed = await asyncio.to_thread(_three_bad_passwords, xmpp_server)
    assert conditions == ["not-authorized"] * 3
    assert closed.error == "policy-violation"


# -- direct TLS (XEP-0368) ------------------------------------------------------------------

@asyncio_test
async def test_direct_tls_port_logs_in_without_starttls(clients: ClientPool) -> None:
    """On the direct TLS port the stream is encrypted from the first byte: the features
    carry SASL mechanisms and no STARTTLS, and the login succeeds."""
    carol = clients.new("carol", resource="xmpps")
    await carol.login(clients.server.direct_tls_port, direct_tls=True)
    assert carol.secure
    first_features = carol.stream_features.items[0]
    assert first_features.find(f"{{{TLS_NS}}}starttls") is None
    assert "SCRAM-SHA-256" in feature_mechanisms(first_features)
    await carol.ping_server()


def _direct_tls_alpn(server: RunningServer) -> tuple[bytes | None, list[str]]:
    client = RawXmppClient(server.direct_tls_port, domain=server.domain, cafile=server.certificate_path,
                           direct_tls=True)
    try:
        assert client.tls is not None
        alpn = client.tls.get_alpn_proto_negotiated()
        client.open()
        return alpn, client.mechanisms()
    finally:
        client.close()


@asyncio_test
async def test_direct_tls_negotiates_alpn_xmpp_client(xmpp_server: RunningServer) -> None:
    """A client offering ALPN 'xmpp-client' (XEP-0368) gets it on the direct TLS port."""
    alpn, mechanisms = await asyncio.to_thread(_direct_tls_alpn, xmpp_server)
    assert alpn == b"xmpp-client"
    assert "PLAIN" in mechanisms


# -- channel binding (SCRAM -PLUS) ----------------------------------------------------------

@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"])
@asyncio_test
async def test_slixmpp_scram_plus_with_tls_unique_on_tls12(
        clients: ClientPool, log_events: list[dict[str, Any]], mechanism: str) -> None:
    """On TLS 1.2 the server offers -PLUS with tls-unique, and slixmpp (which knows only
    tls-unique) binds to it and logs in."""
    alice = clients.new("alice", resource="plus", mechanism=mechanism,
                        max_tls_version=ssl.TLSVersion.TLSv1_2)
    await alice.login(clients.server.c2s_port)
    assert alice.tls_version == "TLSv1.2"
    assert mechanism in feature_mechanisms(alice.stream_features.items[1])  # after STARTTLS, before SASL
    assert authenticated_mechanisms(log_events) == [mechanism]


def _scram_plus(server: RunningServer, password: str, *, tls_max: int | None, cb_type: str,
                mechanism: str = "SCRAM-SHA-256-PLUS", tamper: bool = False) -> dict[str, Any]:
    client = raw(server, tls_max_version=tls_max)
    try:
        client.open()
        client.starttls()
        offered = client.mechanisms()
        cb_types = client.channel_binding_types()
        if cb_type == "tls-unique" and client.tls_version == "TLSv1.3":
            data = b"\0" * 12  # TLS 1.3 has no tls-unique (RFC 9266); claim some anyway
        else:
            data = client.channel_binding(cb_type)
        if tamper:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        result = client.auth_scram(mechanism, "alice", password, channel_binding=(cb_type, data))
        outcome = {"tls": client.tls_version, "offered": offered, "cb_types": cb_types,
                   "result": result.tag.split("}", 1)[1]}
        if outcome["result"] == "failure":
            outcome["condition"] = result[0].tag.split("}", 1)[1]
        else:
            outcome["jid"] = client.bind("plus")
        return outcome
    finally:
        client.close()


@asyncio_test
async def test_scram_sha256_plus_with_tls_exporter_on_tls13(xmpp_server: RunningServer,
                                                            accounts: dict[str, str]) -> None:
    """On TLS 1.3 the server advertises tls-exporter (XEP-0440) and accepts a
    SCRAM-SHA-256-PLUS exchange bound to it (RFC 9266)."""
    outcome = await asyncio.to_thread(_scram_plus, xmpp_server, accounts["alice"], tls_max=None,
                                      cb_type="tls-exporter")
    assert outcome["tls"] == "TLSv1.3"
    assert "SCRAM-SHA-256-PLUS" in outcome["offered"]
    assert "tls-exporter" in outcome["cb_types"] and "tls-unique" not in outcome["cb_types"]
    assert outcome["result"] == "success", outcome
    assert outcome["jid"] == "alice@localhost/plus"


@asyncio_test
async def test_scram_plus_with_tls_server_end_point(xmpp_server: RunningServer,
                                                    accounts: dict[str, str]) -> None:
    """tls-server-end-point (RFC 5929 4) binding is accepted too."""
    outcome = await asyncio.to_thread(_scram_plus, xmpp_server, accounts["alice"], tls_max=None,
                                      cb_type="tls-server-end-point")
    assert "tls-server-end-point" in outcome["cb_types"]
    assert outcome["result"] == "success", outcome


@asyncio_test
async def test_scram_plus_with_tls_unique_on_tls12_by_hand(xmpp_server: RunningServer,
                                                           accounts: dict[str, str]) -> None:
    """On TLS 1.2 tls-unique is advertised and a -PLUS exchange bound to it succeeds."""
    outcome = await asyncio.to_thread(_scram_plus, xmpp_server, accounts["alice"],
                                      tls_max=SSL.TLS1_2_VERSION, cb_type="tls-unique")
    assert outcome["tls"] == "TLSv1.2"
    assert "tls-unique" in outcome["cb_types"] and "tls-exporter" not in outcome["cb_types"]
    assert outcome["result"] == "success", outcome


@pytest.mark.parametrize("cb_type,tls_max", [("tls-exporter", None),
                                             ("tls-unique", SSL.TLS1_2_VERSION),
                                             ("tls-server-end-point", None)])
@asyncio_test
async def test_scram_plus_with_wrong_binding_data_fails(xmpp_server: RunningServer,
                                                        accounts: dict[str, str], cb_type: str,
                                                        tls_max: int | None) -> None:
    """Binding data that differs from the server's (a man in the middle) fails with
    <not-authorized/> even with the right password."""
    outcome = await asyncio.to_thread(_scram_plus, xmpp_server, accounts["alice"], tls_max=tls_max,
                                      cb_type=cb_type, tamper=True)
    assert outcome["result"] == "failure"
    assert outcome["condition"] == "not-authorized"


@asyncio_test
async def test_scram_plus_with_a_binding_type_not_offered_fails(xmpp_server: RunningServer,
                                                                accounts: dict[str, str]) -> None:
    """tls-unique on a TLS 1.3 stream (forbidden by RFC 9266) is refused."""
    outcome = await asyncio.to_thread(_scram_plus, xmpp_server, accounts["alice"], tls_max=None,
                                      cb_type="tls-unique")
    assert outcome["tls"] == "TLSv1.3"
    assert outcome["result"] == "failure"
    assert outcome["condition"] == "not-authorized"


def _downgraded_scram(server: RunningServer, password: str) -> str:
    from tigasepy.auth.scram import ScramClient

    client = raw(server)
    try:
        client.open()
        client.starttls()
        assert "SCRAM-SHA-256-PLUS" in client.mechanisms()
        scram = ScramClient("SCRAM-SHA-256", "alice", password, client_supports_binding=True)
        result = client.auth("SCRAM-SHA-256", scram.first())
        if result.tag == tag(SASL_NS, "failure"):
            return result[0].tag.split("}", 1)[1]
        return result.tag
    finally:
        client.close()


@asyncio_test
async def test_scram_binding_downgrade_is_detected(xmpp_server: RunningServer,
                                                   accounts: dict[str, str]) -> None:
    """A client saying 'y' (I could bind, but you did not offer -PLUS) while -PLUS was
    offered reveals a stripped mechanism list: the server refuses (RFC 5802 6)."""
    condition = await asyncio.to_thread(_downgraded_scram, xmpp_server, accounts["alice"])
    assert condition == "not-authorized"


def _server_first(server: RunningServer, user: str) -> dict[str, str]:
    """The attributes of the server-first-message SCRAM-SHA-256 gets for ``user``."""
    import base64

    from tigasepy.auth.scram import ScramClient

    client = raw(server)
    try:
        client.open()
        client.starttls()
        challenge = client.auth("SCRAM-SHA-256", ScramClient("SCRAM-SHA-256", user, "x").first())
        assert challenge.tag == tag(SASL_NS, "challenge"), as_text(challenge)
        text = base64.b64decode(challenge.text or "").decode()
        attrs = dict(part.split("=", 1) for part in text.split(","))
        return {"i": attrs["i"], "salt_bytes": str(len(base64.b64decode(attrs["s"]))), "s": attrs["s"]}
    finally:
        client.close()


@asyncio_test
async def test_scram_challenge_does_not_reveal_whether_an_account_exists(
        xmpp_server: RunningServer, accounts: dict[str, str]) -> None:
    """The server-first-message for an unknown user looks like one for a real account
    (same iteration count, same salt size) and is stable across attempts, so SCRAM cannot
    be used to enumerate accounts (server configured with auth.scram_iterations = 4096)."""
    real = await asyncio.to_thread(_server_first, xmpp_server, "alice")
    unknown = await asyncio.to_thread(_server_first, xmpp_server, "nobody")
    unknown_again = await asyncio.to_thread(_server_first, xmpp_server, "nobody")
    assert unknown["s"] == unknown_again["s"], "the fake salt changes between attempts"
    assert unknown["salt_bytes"] == real["salt_bytes"]
    assert unknown["i"] == real["i"]


def _switch_domain_after_sasl(server: RunningServer, password: str) -> str:
    """Authenticate as alice@localhost, restart the stream to other.localhost, try to bind.

    Returns the bound JID, or 'closed:<condition>' when the server ends the stream."""
    client = raw(server)
    try:
        client.open()
        client.starttls()
        result = client.auth("PLAIN", f"\0alice\0{password}".encode())
        assert result.tag == tag(SASL_NS, "success"), as_text(result)
        client.domain = "other.localhost"
        try:
            client.open()
            return client.bind("switched")
        except StreamClosed as closed:
            return f"closed:{closed.error}"
        except AssertionError as refused:  # bind answered with an error
            return f"refused:{refused}"
    finally:
        client.close()


@pytest.mark.parametrize("server_overrides", [{"server": {"domains": ["localhost", "other.localhost"]}}])
@asyncio_test
async def test_stream_restart_after_sasl_cannot_switch_to_another_hosted_domain(
        xmpp_server: RunningServer, accounts: dict[str, str]) -> None:
    """With two hosted domains, alice@localhost authenticating and then restarting the
    stream to 'other.localhost' must not end up bound as alice@other.localhost (an account
    she never proved anything about)."""
    outcome = await asyncio.to_thread(_switch_domain_after_sasl, xmpp_server, accounts["alice"])
    assert not outcome.startswith("alice@other.localhost"), outcome
    assert all(s.jid.host == "localhost" for s in xmpp_server.service.sm.all_sessions())


@pytest.mark.parametrize("server_overrides", [{"server": {"domains": ["localhost", "other.localhost"]}}])
@asyncio_test
async def test_second_hosted_domain_serves_its_own_accounts(clients: ClientPool) -> None:
    """An account of the second hosted domain logs in (the generated certificate covers it)
    and chats with one of the first domain; alice@localhost's password is no use there."""
    from support.xmpp_clients import TestClient, from_deferred, is_chat

    server = clients.server
    await from_deferred(server.accounts.register("dora@other.localhost", "dora-password"))
    dora = TestClient("dora@other.localhost/d", "dora-password", cafile=server.certificate_path)
    clients.clients.append(dora)
    await dora.login(server.c2s_port)
    alice = await clients.login("alice", resource="a")
    dora.send_message(mto=alice.boundjid.full, mbody="across domains", mtype="chat")
    got = await alice.messages.wait_for(is_chat("across domains"), what="dora's message")
    assert got.xml.get("from") == "dora@other.localhost/d"

    impostor = TestClient("alice@other.localhost/x", clients.server.passwords["alice@localhost"],
                          cafile=server.certificate_path)
    clients.clients.append(impostor)
    with pytest.raises(LoginFailed):
        await impostor.login(server.c2s_port)


# -- key exchange ---------------------------------------------------------------------------

def _login_key_exchange(server: RunningServer, password: str) -> str:
    """Log alice in over STARTTLS with the raw client; the key-exchange group TLS agreed on."""
    client = raw(server)
    try:
        client.login("alice", password)
        assert client.tls is not None
        return client.tls.get_group_name()
    finally:
        client.close()


@asyncio_test
async def test_starttls_prefers_the_post_quantum_hybrid_key_exchange_by_default(
        xmpp_server: RunningServer, accounts: dict[str, str]) -> None:
    """With [tls] groups unset, a client offering X25519MLKEM768 gets it (OpenSSL's default)."""
    group = await asyncio.to_thread(_login_key_exchange, xmpp_server, accounts["alice"])
    assert group == "X25519MLKEM768"


@pytest.mark.parametrize("server_overrides", [{"tls": {"groups": ["P-256"]}}])
@asyncio_test
async def test_configured_key_exchange_groups_limit_what_starttls_agrees_on(
        xmpp_server: RunningServer, accounts: dict[str, str]) -> None:
    """[tls] groups = ["P-256"]: the same client (offering the hybrid and X25519 first) ends
    up on P-256 and still logs in."""
    group = await asyncio.to_thread(_login_key_exchange, xmpp_server, accounts["alice"])
    assert group in ("prime256v1", "secp256r1", "P-256")


# -- TCP ------------------------------------------------------------------------------------

def _nagle_off(stream: Any) -> bool:
    import socket

    return bool(stream.transport.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


@asyncio_test
async def test_client_connections_disable_nagle_without_nagle(
        xmpp_server: RunningServer, clients: ClientPool) -> None:
    """Both client listeners turn Nagle's algorithm off (TCP_NODELAY): a stanza written right
    after another must not wait for the client's delayed ACK (40 ms on Linux)."""
    await clients.login("alice", resource="starttls")
    await clients.login("carol", resource="direct", direct_tls=True)
    streams = {s.resource: s.handle for s in xmpp_server.service.sm.all_sessions()}
    assert set(streams) == {"starttls", "direct"}
    assert all(_nagle_off(stream) for stream in streams.values())
