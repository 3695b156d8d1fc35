"""Incoming server-to-server streams over a StringTransport (RFC 6120, XEP-0178, XEP-0220, XEP-0288).

We are a.example; the peer claims b.example. TLS is a stand-in (``support.s2s_harness``):
STARTTLS is recorded, and the peer's certificate is valid for ``harness.tls.valid_peers``.
"""

from __future__ import annotations

import base64

import pytest
from zope.interface.verify import verifyObject

from support.s2s_harness import DB, LOCAL, REMOTE, Peer, S2SHarness, header, stanza
from tigasepy.interfaces import IComponent
from tigasepy.s2s.dialback import dialback_key
from tigasepy.s2s.stream import CLOSE_TIMEOUT_S
from tigasepy.xmpp import namespaces as ns

TLS, SASL = ns.TLS, ns.SASL


def features(peer: Peer) -> dict[str, object]:
    """The last features element our side sent, as {feature name: element}."""
    peer.read_pending()
    [element] = [e for e in peer.view.elements if e.name == "features"][-1:]
    return {child.name: child for child in element.elements()}


def secure(harness: S2SHarness, valid: bool = False, sender: str | None = REMOTE) -> Peer:
    """An incoming stream past STARTTLS (the peer's certificate valid for b.example when ``valid``)."""
    if valid:
        harness.tls.valid_peers.add(REMOTE)
    peer = harness.incoming()
    peer.send(header(sender))
    peer.read()
    peer.send(f"<starttls xmlns='{TLS}'/>")
    [proceed] = peer.read()
    assert proceed.name == "proceed"
    assert peer.transport.tls == "server-context"
    peer.send(header(sender))
    return peer


def dialback_authenticated(harness: S2SHarness) -> Peer:
    """An incoming stream on which b.example authenticated by certificate-backed dialback."""
    peer = secure(harness, valid=True)
    peer.read()
    peer.send(f"<db:result from='{REMOTE}' to='{LOCAL}'>somekey</db:result>")
    [answer] = peer.read()
    assert answer["type"] == "valid"
    return peer


@pytest.fixture
def harness() -> S2SHarness:
    return S2SHarness()


def test_service_is_a_component(harness: S2SHarness) -> None:
    """The federation service is the router's default destination (IComponent)."""
    verifyObject(IComponent, harness.service)


def test_header_for_a_domain_not_served_gets_host_unknown(harness: S2SHarness) -> None:
    peer = harness.incoming()
    peer.send(header(to="elsewhere.example"))
    assert peer.error() == "host-unknown"
    assert peer.disconnecting


def test_header_without_version_gets_unsupported_version(harness: S2SHarness) -> None:
    peer = harness.incoming()
    peer.send(header(version=""))
    assert peer.error() == "unsupported-version"


def test_header_in_the_client_namespace_gets_invalid_namespace(harness: S2SHarness) -> None:
    peer = harness.incoming()
    peer.send(f"<stream:stream xmlns='jabber:client' xmlns:stream='{ns.STREAMS}' to='{LOCAL}' version='1.0'>")
    assert peer.error() == "invalid-namespace"


def test_before_tls_only_required_starttls_and_bidi_are_offered(harness: S2SHarness) -> None:
    """RFC 6120 5.3.1: with TLS required nothing else is negotiable before it."""
    peer = harness.incoming()
    peer.send(header())
    assert peer.header["from"] == LOCAL and peer.header["to"] == REMOTE and peer.header["id"]
    offered = features(peer)
    assert set(offered) == {"starttls", "bidi"}
    assert next(offered["starttls"].elements(TLS, "required"), None) is not None


def test_dialback_before_starttls_is_a_policy_violation(harness: S2SHarness) -> None:
    peer = harness.incoming()
    peer.send(header())
    peer.send(f"<db:result from='{REMOTE}' to='{LOCAL}'>k</db:result>")
    assert peer.error() == "policy-violation"


def test_stanza_before_tls_is_not_authorized(harness: S2SHarness) -> None:
    peer = harness.incoming()
    peer.send(header())
    peer.send(f"<message from='bob@{REMOTE}' to='alice@{LOCAL}'><body>x</body></message>")
    assert peer.error() == "not-authorized"
    assert harness.router.routed == []


def test_insecure_domain_may_skip_tls_and_use_dialback(harness: S2SHarness) -> None:
    harness = S2SHarness(insecure_domains=(REMOTE,))
    peer = harness.incoming()
    peer.send(header())
    offered = features(peer)
    assert "dialback" in offered
    assert next(offered["starttls"].elements(TLS, "required"), None) is None


def test_after_tls_an_untrusted_certificate_gets_dialback_but_no_external(harness: S2SHarness) -> None:
    peer = secure(harness, valid=False)
    offered = features(peer)
    assert "dialback" in offered and "mechanisms" not in offered and "starttls" not in offered
    assert next(offered["dialback"].elements(), None).name == "errors"


def test_external_is_offered_and_accepted_for_a_valid_certificate(harness: S2SHarness) -> None:
    """XEP-0178: EXTERNAL with the sender's domain as authorization identity; after the restart
    stanzas from that domain flow."""
    peer = secure(harness, valid=True)
    offered = features(peer)
    assert [str(m) for m in offered["mechanisms"].elements(SASL, "mechanism")] == ["EXTERNAL"]
    authzid = base64.b64encode(REMOTE.encode()).decode()
    peer.send(f"<auth xmlns='{SASL}' mechanism='EXTERNAL'>{authzid}</auth>")
    [success] = peer.read()
    assert success.name == "success"
    peer.send(header())
    assert set(features(peer)) == {"bidi"}           # nothing left to negotiate
    peer.send(f"<message from='bob@{REMOTE}/w' to='alice@{LOCAL}' type='chat'><body>hi</body></message>")
    [routed] = harness.router.routed
    assert routed["from"] == f"bob@{REMOTE}/w" and routed.uri is None
    assert peer.stream.auth_methods == {(REMOTE, LOCAL): "sasl-external"}


def test_external_with_an_empty_authorization_identity_is_accepted(harness: S2SHarness) -> None:
    peer = secure(harness, valid=True)
    peer.read()
    peer.send(f"<auth xmlns='{SASL}' mechanism='EXTERNAL'>=</auth>")
    [success] = peer.read()
    assert success.name == "success"


def test_external_for_another_identity_fails_with_invalid_authzid(harness: S2SHarness) -> None:
    peer = secure(harness, valid=True)
    peer.read()
    other = base64.b64encode(b"c.example").decode()
    peer.send(f"<auth xmlns='{SASL}' mechanism='EXTERNAL'>{other}</auth>")
    [failure] = peer.read()
    assert failure.name == "failure" and next(failure.elements()).name == "invalid-authzid"
    assert not peer.stream.authenticated


def test_external_not_offered_is_refused_with_invalid_mechanism(harness: S2SHarness) -> None:
    peer = secure(harness, valid=False)
    peer.read()
    peer.send(f"<auth xmlns='{SASL}' mechanism='EXTERNAL'>=</auth>")
    [failure] = peer.read()
    assert next(failure.elements()).name == "invalid-mechanism"


def test_dialback_key_is_verified_with_the_authoritative_server(harness: S2SHarness) -> None:
    """XEP-0220 2.1-2.3: the key goes to b.example's authoritative server in a db:verify over
    our outgoing stream (sent right after its TLS, before that stream is authenticated); the
    answer decides the incoming stream's db:result."""
    incoming = secure(harness)
    incoming_id = incoming.header["id"]
    incoming.send(f"<db:result from='{REMOTE}' to='{LOCAL}'>theirkey</db:result>")
    assert incoming.read() == []
    [attempt] = harness.attempts
    assert (attempt.remote, attempt.target.host, attempt.target.port) == (REMOTE, "127.0.0.1", 5269)
    out = attempt.connect()
    assert out.header["from"] == LOCAL and out.header["to"] == REMOTE
    out.send(header(sender=REMOTE, to=LOCAL, stream_id="out-1"))
    out.send(f"<stream:features><starttls xmlns='{TLS}'><required/></starttls></stream:features>")
    [starttls] = out.read()
    assert starttls.name == "starttls"
    out.send(f"<proceed xmlns='{TLS}'/>")
    assert out.transport.tls == ("client-context", REMOTE, False)
    out.send(header(sender=REMOTE, to=LOCAL, stream_id="out-2"))
    out.send("<stream:features><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>"
             "</stream:features>")
    sent = out.read()
    verify = next(e for e in sent if e.name == "verify")
    result = next(e for e in sent if e.name == "result")
    assert (verify.uri, verify["from"], verify["to"], verify["id"], str(verify)) == (
        DB, LOCAL, REMOTE, incoming_id, "theirkey")
    assert str(result) == dialback_key(b"harness-dialback-secret", REMOTE, LOCAL, "out-2")
    out.send(f"<db:verify from='{REMOTE}' to='{LOCAL}' id='{incoming_id}' type='valid'/>")
    [answer] = incoming.read()
    assert (answer.uri, answer.name, answer["from"], answer["to"], answer["type"]) == (
        DB, "result", LOCAL, REMOTE, "valid")
    assert incoming.stream.auth_methods == {(REMOTE, LOCAL): "dialback"}
    incoming.send(f"<presence from='bob@{REMOTE}/w' to='alice@{LOCAL}'/>")
    assert [s.name for s in harness.router.routed] == ["presence"]


def test_dialback_key_declared_invalid_closes_the_stream(harness: S2SHarness) -> None:
    incoming = secure(harness)
    incoming_id = incoming.header["id"]
    incoming.send(f"<db:result from='{REMOTE}' to='{LOCAL}'>forged</db:result>")
    out = harness.attempts[0].connect()
    out.send(header(sender=REMOTE, to=LOCAL, stream_id="o"))
    out.send(f"<stream:features><starttls xmlns='{TLS}'/></stream:features>")
    out.send(f"<proceed xmlns='{TLS}'/>")
    out.send(header(sender=REMOTE, to=LOCAL, stream_id="o2"))
    out.send("<stream:features/>")
    out.send(f"<db:verify from='{REMOTE}' to='{LOCAL}' id='{incoming_id}' type='invalid'/>")
    answers = incoming.read()
    assert answers[0]["type"] == "invalid"
    assert incoming.error() == "not-authorized"


def test_dialback_verification_that_cannot_reach_the_authoritative_server_is_an_error(
        harness: S2SHarness) -> None:
    incoming = secure(harness)
    incoming.read()
    incoming.send(f"<db:result from='{REMOTE}' to='{LOCAL}'>k</db:result>")
    harness.attempts[0].refuse()
    [answer] = incoming.read()
    assert answer["type"] == "error"
    assert next(next(answer.elements()).elements()).name == "remote-server-not-found"
    assert not incoming.stream.closing      # a dialback error is not a stream error


def test_dialback_from_a_peer_with_a_valid_certificate_needs_no_callback(harness: S2SHarness) -> None:
    peer = dialback_authenticated(harness)
    assert harness.attempts == []
    assert peer.stream.auth_methods == {(REMOTE, LOCAL): "certificate"}


def test_dialback_off_refuses_peers_without_a_valid_certificate(harness: S2SHarness) -> None:
    harness = S2SHarness(dialback=False)
    peer = secure(harness)
    assert "dialback" in features(peer)      # still: a valid certificate may use it
    peer.send(f"<db:result from='{REMOTE}' to='{LOCAL}'>k</db:result>")
    [answer] = peer.read()
    assert answer["type"] == "error" and harness.attempts == []


def test_dialback_off_still_allows_unverified_domains(harness: S2SHarness) -> None:
    harness = S2SHarness(dialback=False, unverified_domains=(REMOTE,))
    peer = secure(harness)
    peer.read()
    peer.send(f"<db:result from='{REMOTE}' to='{LOCAL}'>k</db:result>")
    assert peer.read() == [] and len(harness.attempts) == 1


def test_dialback_for_a_domain_not_served_is_a_dialback_error_not_a_stream_error(harness: S2SHarness) -> None:
    peer = secure(harness)
    peer.read()
    peer.send(f"<db:result from='{REMOTE}' to='other.example'>k</db:result>")
    [answer] = peer.read()
    assert answer["type"] == "error" and answer["from"] == "other.example"
    assert next(next(answer.elements()).elements()).name == "item-not-found"
    assert not peer.stream.closing


def test_verify_request_is_answered_with_our_own_key(harness: S2SHarness) -> None:
    """We are the authoritative server for a.example (XEP-0220 2.3)."""
    peer = secure(harness)
    peer.read()
    good = harness.key(REMOTE, LOCAL, "their-stream")
    peer.send(f"<db:verify from='{REMOTE}' to='{LOCAL}' id='their-stream'>{good}</db:verify>")
    peer.send(f"<db:verify from='{REMOTE}' to='{LOCAL}' id='their-stream'>{'0' * 64}</db:verify>")
    peer.send(f"<db:verify from='{REMOTE}' to='{LOCAL}' id='another-stream'>{good}</db:verify>")
    answers = peer.read()
    assert [(a["from"], a["to"], a["id"], a["type"]) for a in answers] == [
        (LOCAL, REMOTE, "their-stream", "valid"),
        (LOCAL, REMOTE, "their-stream", "invalid"),
        (LOCAL, REMOTE, "another-stream", "invalid")]


def test_verify_request_for_a_domain_not_served_gets_item_not_found(harness: S2SHarness) -> None:
    peer = secure(harness)
    peer.read()
    peer.send(f"<db:verify from='{REMOTE}' to='other.example' id='x'>k</db:verify>")
    [answer] = peer.read()
    assert answer["type"] == "error"


def test_stanza_from_a_domain_not_authenticated_is_invalid_from(harness: S2SHarness) -> None:
    peer = dialback_authenticated(harness)
    peer.send(f"<message from='eve@c.example' to='alice@{LOCAL}'><body>x</body></message>")
    assert peer.error() == "invalid-from"
    assert harness.router.routed == []


def test_stanza_to_a_domain_not_served_is_host_unknown(harness: S2SHarness) -> None:
    peer = dialback_authenticated(harness)
    peer.send(f"<message from='bob@{REMOTE}' to='x@elsewhere.example'><body>x</body></message>")
    assert peer.error() == "host-unknown"


def test_stanza_to_a_component_of_ours_is_accepted(harness: S2SHarness) -> None:
    peer = dialback_authenticated(harness)
    peer.send(f"<presence from='bob@{REMOTE}/w' to='room@muc.{LOCAL}/bob'/>")
    assert len(harness.router.routed) == 1


def test_stanza_without_from_is_improper_addressing(harness: S2SHarness) -> None:
    peer = dialback_authenticated(harness)
    peer.send(f"<message to='alice@{LOCAL}'><body>x</body></message>")
    assert peer.error() == "improper-addressing"


def test_direct_tls_stream_offers_authentication_at_once(harness: S2SHarness) -> None:
    """XEP-0368: no STARTTLS on a stream that is encrypted from the first byte."""
    harness.tls.valid_peers.add(REMOTE)
    peer = harness.incoming(direct_tls=True)
    peer.send(header())
    offered = features(peer)
    assert "starttls" not in offered and "mechanisms" in offered and "dialback" in offered


def test_bidirectional_stream_carries_our_stanzas_back(harness: S2SHarness) -> None:
    """XEP-0288: once the peer enabled bidi and authenticated, stanzas for it use this stream."""
    harness.tls.valid_peers.add(REMOTE)
    peer = secure(harness, valid=True)
    peer.read()
    peer.send("<bidi xmlns='urn:xmpp:bidi'/>")
    peer.send(f"<db:result from='{REMOTE}' to='{LOCAL}'>k</db:result>")
    peer.read()
    harness.router.route(stanza(body="over bidi"))
    [message] = peer.read()
    assert str(message.body) == "over bidi" and harness.attempts == []


def test_without_bidi_our_stanzas_open_an_outgoing_stream(harness: S2SHarness) -> None:
    dialback_authenticated(harness)
    harness.router.route(stanza())
    assert len(harness.attempts) == 1


def test_unauthenticated_stream_times_out(harness: S2SHarness) -> None:
    peer = secure(harness)
    harness.clock.advance(harness.config.connect_timeout_s - 1)
    assert peer.error() is None
    harness.clock.advance(2)
    assert peer.error() == "connection-timeout"


def test_idle_stream_is_closed_gracefully(harness: S2SHarness) -> None:
    """No stream error: our closing tag, then the connection drops once the peer closes too
    (or after a short wait)."""
    peer = dialback_authenticated(harness)
    harness.clock.advance(harness.config.idle_timeout_s - 1)
    peer.send(f"<message from='bob@{REMOTE}' to='alice@{LOCAL}'><body>x</body></message>")
    harness.clock.advance(harness.config.idle_timeout_s - 1)
    assert not peer.stream.closing
    harness.clock.advance(2)
    assert peer.stream.closing and peer.error() is None
    assert peer.transport.value() == b"" and peer.view.ended     # our </stream:stream>
    assert not peer.disconnecting
    peer.send(f"<message from='bob@{REMOTE}' to='alice@{LOCAL}'><body>late</body></message>")
    assert str(harness.router.routed[-1].body) == "late"      # still processed while closing
    harness.clock.advance(CLOSE_TIMEOUT_S)
    assert peer.disconnecting


def test_peer_closing_tag_ends_the_stream(harness: S2SHarness) -> None:
    peer = dialback_authenticated(harness)
    peer.send("</stream:stream>")
    assert peer.disconnecting


@pytest.mark.parametrize("extra", [0, 1])
def test_unauthenticated_stream_limit(extra: int) -> None:
    """``max_unauthenticated`` streams may be set up at once; one more is refused."""
    harness = S2SHarness(max_unauthenticated=2, max_connections_per_peer=10)
    peers = [harness.incoming(host=f"192.0.2.{i}") for i in range(2 + extra)]
    for peer in peers[:2]:
        peer.send(header())
        assert peer.error() is None
    if extra:
        assert peers[-1].error() == "resource-constraint"


@pytest.mark.parametrize("extra", [0, 1])
def test_connections_per_peer_address_limit(extra: int) -> None:
    harness = S2SHarness(max_connections_per_peer=2)
    peers = [harness.incoming(host="192.0.2.7") for _ in range(2 + extra)]
    assert all(p.error() is None for p in peers[:2])
    if extra:
        assert peers[-1].error() == "policy-violation"
    other = harness.incoming(host="192.0.2.8")
    assert other.error() is None


def test_connection_count_is_released_when_a_stream_ends() -> None:
    harness = S2SHarness(max_connections_per_peer=1)
    first = harness.incoming(host="192.0.2.7")
    first.lose()
    second = harness.incoming(host="192.0.2.7")
    assert second.error() is None
    assert harness.service.unauthenticated == 1


def test_shutdown_closes_incoming_streams_with_system_shutdown(harness: S2SHarness) -> None:
    peer = dialback_authenticated(harness)
    harness.service.stopService()
    assert peer.error() == "system-shutdown"


@pytest.mark.parametrize("size,allowed", [(4000, True), (4200, False)])
def test_elements_before_authentication_are_small(size: int, allowed: bool) -> None:
    """``unauthenticated_stanza_size_limit_bytes`` bounds what an unauthenticated peer may send."""
    harness = S2SHarness(unauthenticated_stanza_size_limit_bytes=4096)
    peer = secure(harness)
    peer.read()
    opening = f"<db:verify from='{REMOTE}' to='{LOCAL}' id='x'>"
    closing = "</db:verify>"
    peer.send(opening + "k" * (size - len(opening) - len(closing)) + closing)
    assert (peer.error() is None) is allowed
    if not allowed:
        assert peer.error() == "policy-violation"


def test_authenticated_peers_may_send_full_size_stanzas() -> None:
    harness = S2SHarness(unauthenticated_stanza_size_limit_bytes=4096)
    peer = dialback_authenticated(harness)
    peer.send(f"<message from='bob@{REMOTE}' to='alice@{LOCAL}'><body>{'x' * 20000}</body></message>")
    assert peer.error() is None and len(harness.router.routed) == 1
