"""Outgoing server-to-server streams and routes over StringTransports (RFC 6120, XEP-0220,
XEP-0178, XEP-0288, XEP-0368): queueing, negotiation, bounces, timeouts, idle close.

We are a.example sending to b.example (static route 127.0.0.1:5269) or c.example (two
targets: 127.0.0.2:5269 STARTTLS, then 127.0.0.3:5270 direct TLS).
"""

from __future__ import annotations

import base64

import pytest

from support.s2s_harness import DB, LOCAL, REMOTE, Peer, S2SHarness, header, stanza
from tigasepy.router.router import Router
from tigasepy.s2s.dialback import dialback_key
from tigasepy.s2s.stream import CLOSE_TIMEOUT_S
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import error_condition

TLS, SASL = ns.TLS, ns.SASL
DIALBACK_FEATURE = "<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>"


def negotiate_tls(out: Peer, extra_features: str = DIALBACK_FEATURE) -> None:
    """The remote side of STARTTLS; ends with the post-TLS features (``extra_features``)."""
    out.send(header(sender=REMOTE, to=LOCAL, stream_id="s1"))
    out.send(f"<stream:features><starttls xmlns='{TLS}'><required/></starttls></stream:features>")
    assert [e.name for e in out.read()] == ["starttls"]
    out.send(f"<proceed xmlns='{TLS}'/>")
    out.send(header(sender=REMOTE, to=LOCAL, stream_id="s2"))
    out.send(f"<stream:features>{extra_features}</stream:features>")


def dialback_ready(harness: S2SHarness, remote: str = REMOTE) -> Peer:
    """Send a message to ``remote`` and bring its stream up with dialback; returns the peer."""
    harness.router.route(stanza(to=f"bob@{remote}", body="first"))
    out = harness.attempts[-1].connect()
    negotiate_tls(out)
    [result] = [e for e in out.read() if e.name == "result"]
    out.send(f"<db:result from='{remote}' to='{LOCAL}' type='valid'/>")
    return out


def bodies(out: Peer) -> list[str]:
    return [str(e.body) for e in out.read() if e.name == "message"]


def bounced(harness: S2SHarness) -> list[tuple[str, str]]:
    return [(str(s.body) if s.body else s.name, condition) for s, condition in harness.router.bounced]


@pytest.fixture
def harness() -> S2SHarness:
    return S2SHarness()


def test_stanzas_queue_until_dialback_succeeds_then_go_in_order(harness: S2SHarness) -> None:
    """XEP-0220 2.1.1: nothing is sent before the Receiving Server says the key is valid."""
    harness.router.route(stanza(body="one"))
    harness.router.route(stanza(body="two"))
    [attempt] = harness.attempts
    out = attempt.connect()
    assert out.header == {**out.header, "from": LOCAL, "to": REMOTE, "version": "1.0"}
    negotiate_tls(out)
    [result] = out.read()
    assert (result.uri, result.name, result["from"], result["to"]) == (DB, "result", LOCAL, REMOTE)
    assert str(result) == dialback_key(b"harness-dialback-secret", REMOTE, LOCAL, "s2")
    out.send(f"<db:result from='{REMOTE}' to='{LOCAL}' type='valid'/>")
    assert bodies(out) == ["one", "two"]
    harness.router.route(stanza(body="three"))
    assert bodies(out) == ["three"]
    assert out.stream.auth_method == "dialback" and len(harness.attempts) == 1


def test_written_stanzas_belong_to_the_server_namespace(harness: S2SHarness) -> None:
    out = dialback_ready(harness)
    out.read()
    harness.router.route(stanza(kind="presence", to=f"bob@{REMOTE}"))
    raw = out.transport.value()
    assert raw.startswith(b"<presence ") and b"xmlns" not in raw


def test_sasl_external_is_used_when_offered(harness: S2SHarness) -> None:
    """XEP-0178: EXTERNAL with our domain as authorization identity, then a stream restart."""
    harness.router.route(stanza(body="one"))
    out = harness.attempts[0].connect()
    negotiate_tls(out, f"<mechanisms xmlns='{SASL}'><mechanism>EXTERNAL</mechanism></mechanisms>"
                       + DIALBACK_FEATURE)
    [auth] = out.read()
    assert auth["mechanism"] == "EXTERNAL" and base64.b64decode(str(auth)).decode() == LOCAL
    out.send(f"<success xmlns='{SASL}'/>")
    assert out.header["from"] == LOCAL             # the restarted stream's header
    out.send(header(sender=REMOTE, to=LOCAL, stream_id="s3"))
    assert bodies(out) == []                        # not before the post-auth features
    out.send("<stream:features/>")
    assert bodies(out) == ["one"]
    assert out.stream.auth_method == "sasl-external"


def test_failed_external_falls_back_to_dialback(harness: S2SHarness) -> None:
    """XEP-0178 1.2: a refused EXTERNAL is followed by dialback on the same stream."""
    harness.router.route(stanza(body="one"))
    out = harness.attempts[0].connect()
    negotiate_tls(out, f"<mechanisms xmlns='{SASL}'><mechanism>EXTERNAL</mechanism></mechanisms>"
                       + DIALBACK_FEATURE)
    out.read()
    out.send(f"<failure xmlns='{SASL}'><not-authorized/></failure>")
    [result] = out.read()
    assert result.name == "result" and result.uri == DB
    out.send(f"<db:result from='{REMOTE}' to='{LOCAL}' type='valid'/>")
    assert bodies(out) == ["one"]


def test_invalid_dialback_bounces_queued_messages(harness: S2SHarness) -> None:
    harness.router.route(stanza(body="one"))
    out = harness.attempts[0].connect()
    negotiate_tls(out)
    out.send(f"<db:result from='{REMOTE}' to='{LOCAL}' type='invalid'/>")
    assert bounced(harness) == [("one", "remote-server-not-found")]
    assert out.stream.closing


def test_dialback_error_answer_bounces_queued_messages(harness: S2SHarness) -> None:
    harness.router.route(stanza(body="one"))
    out = harness.attempts[0].connect()
    negotiate_tls(out)
    out.send(f"<db:result from='{REMOTE}' to='{LOCAL}' type='error'><error type='wait'>"
             f"<remote-server-timeout xmlns='{ns.STANZA_ERRORS}'/></error></db:result>")
    assert bounced(harness) == [("one", "remote-server-timeout")]


def test_peer_without_tls_is_refused_when_tls_is_required(harness: S2SHarness) -> None:
    harness.router.route(stanza(body="one"))
    out = harness.attempts[0].connect()
    out.send(header(sender=REMOTE, to=LOCAL, stream_id="s1"))
    out.send(f"<stream:features>{DIALBACK_FEATURE}</stream:features>")
    assert [e.name for e in out.read()] == []
    assert bounced(harness) == [("one", "remote-server-not-found")]


def test_insecure_domain_may_federate_without_tls() -> None:
    harness = S2SHarness(insecure_domains=(REMOTE,))
    harness.router.route(stanza(body="one"))
    out = harness.attempts[0].connect()
    out.send(header(sender=REMOTE, to=LOCAL, stream_id="s1"))
    out.send(f"<stream:features>{DIALBACK_FEATURE}</stream:features>")
    [result] = out.read()
    assert result.name == "result" and out.transport.tls is None
    out.send(f"<db:result from='{REMOTE}' to='{LOCAL}' type='valid'/>")
    assert bodies(out) == ["one"]


def test_dialback_off_refuses_a_peer_whose_certificate_is_not_valid() -> None:
    harness = S2SHarness(dialback=False)
    harness.router.route(stanza(body="one"))
    out = harness.attempts[0].connect()
    negotiate_tls(out)
    assert [e.name for e in out.read()] == []
    assert bounced(harness) == [("one", "remote-server-not-found")]


def test_dialback_off_uses_external_with_a_valid_certificate() -> None:
    harness = S2SHarness(dialback=False)
    harness.tls.valid_peers.add(REMOTE)
    harness.router.route(stanza(body="one"))
    out = harness.attempts[0].connect()
    negotiate_tls(out, f"<mechanisms xmlns='{SASL}'><mechanism>EXTERNAL</mechanism></mechanisms>")
    [auth] = out.read()
    assert auth.name == "auth"


def test_refused_connection_tries_the_next_target_then_bounces(harness: S2SHarness) -> None:
    harness.router.route(stanza(to="carol@c.example", body="far"))
    first = harness.attempts[0]
    assert (first.target.host, first.target.direct_tls) == ("127.0.0.2", False)
    first.refuse()
    second = harness.attempts[1]
    assert (second.target.host, second.target.port, second.target.direct_tls) == ("127.0.0.3", 5270, True)
    assert harness.router.bounced == []
    second.refuse()
    assert bounced(harness) == [("far", "remote-server-not-found")]
    assert harness.service.routes == {}


def test_direct_tls_target_starts_encrypted_without_starttls(harness: S2SHarness) -> None:
    """XEP-0368: on a direct TLS connection no STARTTLS is negotiated."""
    harness.router.route(stanza(to="carol@c.example", body="far"))
    harness.attempts[0].refuse()
    out = harness.attempts[1].connect()
    assert out.stream.secure
    out.send(header(sender="c.example", to=LOCAL, stream_id="d1"))
    out.send(f"<stream:features>{DIALBACK_FEATURE}</stream:features>")
    [result] = out.read()
    assert result.name == "result"


def test_connection_that_never_completes_times_out_and_bounces_with_remote_server_timeout(
        harness: S2SHarness) -> None:
    harness.router.route(stanza(body="slow"))
    harness.clock.advance(harness.config.connect_timeout_s - 1)
    assert harness.router.bounced == []
    harness.clock.advance(1)
    assert bounced(harness) == [("slow", "remote-server-timeout")]


def test_negotiation_that_stalls_times_out(harness: S2SHarness) -> None:
    harness.router.route(stanza(body="stalled"))
    out = harness.attempts[0].connect()
    out.send(header(sender=REMOTE, to=LOCAL, stream_id="s1"))
    harness.clock.advance(harness.config.connect_timeout_s)
    assert out.disconnecting
    out.lose()
    assert bounced(harness) == [("stalled", "remote-server-timeout")]


def test_no_route_bounces_at_once_with_remote_server_not_found(harness: S2SHarness) -> None:
    """DNS is off in the harness: an unknown domain has no target."""
    harness.router.route(stanza(to="x@unknown.example", body="nowhere"))
    assert bounced(harness) == [("nowhere", "remote-server-not-found")]
    assert harness.attempts == []


@pytest.mark.parametrize("queued", [2, 3])
def test_queue_limit(queued: int) -> None:
    """``max_queued_stanzas`` wait for one pair; past it stanzas bounce with resource-constraint."""
    harness = S2SHarness(max_queued_stanzas=2)
    for index in range(queued):
        harness.router.route(stanza(body=f"m{index}"))
    assert bounced(harness) == ([("m2", "resource-constraint")] if queued == 3 else [])


def test_bounces_go_back_to_the_local_sender_but_never_for_errors() -> None:
    """With the real router: a failed message comes back as an error from the remote
    address; an error stanza is not answered."""
    harness = S2SHarness()
    router = Router()
    delivered = []

    class Local:
        domain = LOCAL

        def receive(self, element):
            delivered.append(element)

    router.add_route(LOCAL, Local())
    router.default = harness.service
    harness.service.router = router
    router.route(stanza(body="lost"))
    router.route(stanza(body="err", type="error"))
    harness.attempts[0].refuse()
    [error] = delivered
    assert (error["type"], error["from"], error["to"], error_condition(error)) == (
        "error", f"bob@{REMOTE}", f"alice@{LOCAL}/home", "remote-server-not-found")


def test_stanza_from_a_domain_not_served_here_is_not_sent(harness: S2SHarness) -> None:
    harness.service.receive(stanza(sender="mallory@c.example", body="spoof"))
    assert harness.attempts == [] and harness.router.bounced == []


def test_idle_outgoing_stream_closes_and_the_next_stanza_reconnects(harness: S2SHarness) -> None:
    out = dialback_ready(harness)
    assert bodies(out) == ["first"]
    harness.clock.advance(harness.config.idle_timeout_s + 1)
    assert out.stream.closing and out.view.ended is False
    out.read()
    assert out.view.ended
    harness.clock.advance(CLOSE_TIMEOUT_S)
    assert out.disconnecting
    out.lose()
    harness.router.route(stanza(body="again"))
    assert len(harness.attempts) == 2


def test_traffic_keeps_the_stream_open(harness: S2SHarness) -> None:
    out = dialback_ready(harness)
    for _ in range(3):
        harness.clock.advance(harness.config.idle_timeout_s - 10)
        harness.router.route(stanza(body="keepalive"))
    assert not out.stream.closing


def test_stream_lost_after_authentication_needs_a_new_route(harness: S2SHarness) -> None:
    out = dialback_ready(harness)
    out.lose()
    harness.router.route(stanza(body="after"))
    assert len(harness.attempts) == 2 and harness.router.bounced == []


def test_peer_stream_error_before_authentication_bounces(harness: S2SHarness) -> None:
    harness.router.route(stanza(body="one"))
    out = harness.attempts[0].connect()
    out.send(header(sender=REMOTE, to=LOCAL, stream_id="s1"))
    out.send(f"<stream:error><host-unknown xmlns='{ns.STREAM_ERRORS}'/></stream:error>")
    assert out.disconnecting
    out.lose()
    assert bounced(harness) == [("one", "remote-server-not-found")]


def test_bidi_is_requested_when_offered_and_the_peer_may_send_back(harness: S2SHarness) -> None:
    """XEP-0288: we send <bidi/> after TLS; once authenticated, the peer's stanzas for us
    arrive on our outgoing stream."""
    harness.router.route(stanza(body="one"))
    out = harness.attempts[0].connect()
    negotiate_tls(out, DIALBACK_FEATURE + "<bidi xmlns='urn:xmpp:features:bidi'/>")
    sent = out.read()
    assert [(e.uri, e.name) for e in sent] == [("urn:xmpp:bidi", "bidi"), (DB, "result")]
    out.send(f"<db:result from='{REMOTE}' to='{LOCAL}' type='valid'/>")
    out.send(f"<message from='bob@{REMOTE}/w' to='alice@{LOCAL}'><body>back</body></message>")
    assert [str(s.body) for s in harness.router.routed] == ["back"]
    out.send(f"<message from='eve@c.example' to='alice@{LOCAL}'><body>spoof</body></message>")
    assert out.error() == "invalid-from"


def test_stanzas_on_a_stream_that_is_not_bidirectional_are_refused(harness: S2SHarness) -> None:
    out = dialback_ready(harness)
    out.send(f"<message from='bob@{REMOTE}' to='alice@{LOCAL}'><body>x</body></message>")
    assert out.error() == "not-authorized"
    assert harness.router.routed == []


def test_bidi_not_requested_when_disabled() -> None:
    harness = S2SHarness(bidi=False)
    harness.router.route(stanza(body="one"))
    out = harness.attempts[0].connect()
    negotiate_tls(out, DIALBACK_FEATURE + "<bidi xmlns='urn:xmpp:features:bidi'/>")
    assert [e.name for e in out.read()] == ["result"]


def test_verify_answer_from_another_stream_or_unknown_id_is_ignored(harness: S2SHarness) -> None:
    out = dialback_ready(harness)
    out.send(f"<db:verify from='{REMOTE}' to='{LOCAL}' id='never-asked' type='valid'/>")
    assert out.error() is None


def test_shutdown_bounces_what_is_queued_and_closes_streams(harness: S2SHarness) -> None:
    out = dialback_ready(harness)
    harness.router.route(stanza(to="carol@c.example", body="queued"))
    harness.service.stopService()
    assert out.error() == "system-shutdown"
    assert bounced(harness) == [("queued", "remote-server-timeout")]
    harness.service.receive(stanza(body="late"))
    assert bounced(harness)[-1] == ("late", "remote-server-timeout")
