"""The session-manager <-> connection-manager link, in memory (iosim) with a task.Clock:
mutual authentication, relayed SASL and bind, stanzas both ways, link failures (queueing,
replay after reconnection, the grace period, a restarted connection manager), settle
reports, request timeouts, back-off and framing limits."""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import replace

import pytest
from twisted.internet.testing import StringTransport
from twisted.words.xish import domish
from zope.interface.verify import verifyObject

from support.c2s_harness import HEADER
from support.link_harness import LINK, SECRET, LinkWorld, settings
from tigasepy.c2s.stream_management import SM
from tigasepy.interfaces import IAuthenticationService, IClientSession, ISaslExchange, ISessionManager, SaslContext
from tigasepy.router.link import (
    LinkProtocol, Outbox, decode_frame, encode_frame, load_link_secret, make_proof, needs_settling,
)
from tigasepy.router.link_cm import RemoteSaslExchange
from tigasepy.router.link_sm import RemoteClientSession
from tigasepy.config import ConfigError
from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp import namespaces as ns


@pytest.fixture
def world() -> LinkWorld:
    w = LinkWorld()
    w.add_cm("cm1")
    w.start("cm1")
    return w


def chat(to: str, body: str, id_: str = "m1") -> str:
    return f"<message to='{to}' type='chat' id='{id_}'><body>{body}</body></message>"


def bodies(stanzas) -> list[str]:
    return [str(next(s.elements(None, "body"))) for s in stanzas if next(s.elements(None, "body"), None) is not None]


# -- interfaces and pure pieces ----------------------------------------------------------------

def test_the_proxies_provide_the_interfaces(world: LinkWorld) -> None:
    """Each relaying class is what it stands for, on its side of the link."""
    remote = world.cms["cm1"].remote
    assert verifyObject(ISessionManager, remote)
    assert verifyObject(IAuthenticationService, remote.auth)
    assert verifyObject(ISaslExchange, RemoteSaslExchange(remote, "PLAIN", SaslContext("example.org", True)))
    assert verifyObject(IClientSession, RemoteClientSession(world.peers["cm1"], 1, True))


def test_frames_round_trip_with_and_without_a_stanza() -> None:
    """A frame is a JSON header, then optionally a newline and one stanza."""
    stanza = parse_stanza("<message to='a@b' id='x'><body>one\ntwo &amp; three</body></message>")
    header, payload = decode_frame(encode_frame({"t": "recv", "sid": 3}, stanza))
    assert header == {"t": "recv", "sid": 3}
    assert str(next(parse_stanza(payload).elements(None, "body"))) == "one\ntwo & three"
    assert decode_frame(encode_frame({"t": "ack", "h": 1})) == ({"t": "ack", "h": 1}, None)


def test_proofs_depend_on_role_secret_and_channel() -> None:
    """A proof is only valid for one role, one secret, one pair of nonces and one TLS channel."""
    base = make_proof(SECRET, "sm", b"n" * 32, b"m" * 32, b"cb")
    assert base != make_proof(SECRET, "cm", b"n" * 32, b"m" * 32, b"cb")
    assert base != make_proof(b"other-secret-xxxxxxxxxx", "sm", b"n" * 32, b"m" * 32, b"cb")
    assert base != make_proof(SECRET, "sm", b"n" * 32, b"m" * 32, b"cb2")
    assert base != make_proof(SECRET, "sm", b"m" * 32, b"n" * 32, b"cb")


def test_outbox_acks_and_barriers() -> None:
    """Frames stay until acknowledged; a barrier fires when everything before it is; an
    impossible ack is refused."""
    outbox = Outbox(limit=3)
    for i in range(3):
        outbox.add(b"f%d" % i)
    assert outbox.full
    barrier = outbox.barrier()
    assert not outbox.ack(4)
    assert outbox.ack(2) and not barrier.called
    assert outbox.ack(3) and barrier.called
    assert outbox.total == 3 and not outbox.frames


def test_what_needs_settling() -> None:
    """Messages with content and IQ requests must survive a dead connection manager; chat
    states, presence, errors and IQ results need not."""
    assert needs_settling(parse_stanza("<message type='chat'><body>hi</body></message>"))
    assert needs_settling(parse_stanza("<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>"))
    assert not needs_settling(parse_stanza(
        "<message type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"))
    assert not needs_settling(parse_stanza("<presence/>"))
    assert not needs_settling(parse_stanza("<message type='error'><body>x</body></message>"))
    assert not needs_settling(parse_stanza("<iq type='result' id='1'/>"))


def test_link_secret_file_is_created_private_and_checked(tmp_path) -> None:
    """The SM generates the secret (mode 600); a connection manager without it, a short or a
    world-readable one is a config error."""
    path = tmp_path / "link-secret"
    with pytest.raises(ConfigError, match="copy the session manager"):
        load_link_secret(path, create=False)
    secret = load_link_secret(path, create=True)
    assert len(secret) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert load_link_secret(path, create=False) == secret
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        load_link_secret(path, create=False)
    short = tmp_path / "short"
    short.write_text("abc\n")
    short.chmod(0o600)
    with pytest.raises(ConfigError, match="at least 16"):
        load_link_secret(short, create=False)


# -- authentication of the link ---------------------------------------------------------------

def test_both_ends_authenticate_and_the_sm_pushes_features(world: LinkWorld) -> None:
    """With the same secret and channel the link comes up; the connection manager learns
    the mechanisms to offer."""
    cm = world.cms["cm1"]
    assert world.peers["cm1"].connected and cm.remote.connected and cm.remote.serving
    assert cm.remote.auth.mechanisms(SaslContext("example.org", False)) == ["PLAIN"]


def test_wrong_secret_is_refused(log_events) -> None:
    """A session manager with another secret gets no link session; the refusal is logged."""
    w = LinkWorld(sm_settings=settings(secret=b"not-the-same-secret-at-all"))
    cm = w.add_cm("cm1")
    w.start("cm1")
    assert not cm.remote.connected and not w.peers["cm1"].connected
    assert cm.remote.session_id is None
    assert any("proof is wrong" in str(e.get("log_format", "")) for e in log_events)


def test_a_relayed_handshake_fails_on_the_channel_binding() -> None:
    """A man in the middle terminates TLS on both sides: the channel bindings differ, so the
    proofs it relays are worthless."""
    w = LinkWorld(sm_settings=settings(binding=b"tls-to-the-attacker"))
    cm = w.add_cm("cm1", settings(binding=b"tls-from-the-attacker"))
    w.start("cm1")
    assert not cm.remote.connected and not w.peers["cm1"].connected


def test_a_pinned_certificate_must_match() -> None:
    """With ``peer_fingerprints`` the peer's certificate must be one of them."""
    pinned = replace(LINK, peer_fingerprints=("ab" * 32,))
    w = LinkWorld(sm_settings=settings(link=pinned, fingerprint="cd" * 32))
    cm = w.add_cm("cm1")
    w.start("cm1")
    assert not w.peers["cm1"].connected
    w2 = LinkWorld(sm_settings=settings(link=pinned, fingerprint="ab" * 32))
    w2.add_cm("cm1")
    w2.start("cm1")
    assert w2.peers["cm1"].connected


def test_a_frame_over_the_pre_auth_limit_ends_the_connection() -> None:
    """Before authentication a peer may only send small frames."""
    from support.link_harness import ConnectionManager

    w = LinkWorld()
    cm = ConnectionManager(w, "cm1", settings(), w.c2s)
    proto = cm.listener.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(struct.pack("!I", 100000) + b"x" * 10)
    assert transport.disconnecting


def test_a_malformed_frame_ends_the_connection() -> None:
    """Garbage instead of a JSON header: the connection is closed with an error frame."""
    from support.link_harness import ConnectionManager

    w = LinkWorld()
    cm = ConnectionManager(w, "cm1", settings(), w.c2s)
    proto = cm.listener.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(struct.pack("!I", 5) + b"{nope")
    assert transport.disconnecting
    assert b'"error"' in transport.value()


def test_the_handshake_has_a_deadline() -> None:
    """A peer that connects and says nothing is dropped after handshake_timeout_s."""
    from support.link_harness import ConnectionManager

    w = LinkWorld()
    cm = ConnectionManager(w, "cm1", settings(), w.c2s)
    proto = cm.listener.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    w.clock.advance(LINK.handshake_timeout_s + 1)
    assert transport.disconnecting


# -- sessions through the link ----------------------------------------------------------------

def test_login_is_checked_by_the_session_manager(world: LinkWorld) -> None:
    """SASL runs in the SM process; the session is bound there with a relaying handle."""
    client = world.cms["cm1"].client()
    assert client.login(world, "alice", "home") == "alice@example.org/home"
    [session] = world.sm.sessions_of("alice@example.org")
    assert isinstance(session.handle, RemoteClientSession)
    assert world.cms["cm1"].remote.session_count() == 1


def test_a_bad_password_fails_inside(world: LinkWorld) -> None:
    """The SM's verdict comes back as the SASL failure."""
    client = world.cms["cm1"].client()
    client.start_auth("alice", "wrong")
    world.settle()
    [failure] = client.output()
    assert failure.name == "failure" and next(failure.elements()).name == "not-authorized"
    assert world.sm.sessions_of("alice@example.org") == []


def test_bind_needs_a_grant_from_a_successful_authentication(world: LinkWorld) -> None:
    """A connection manager cannot bind a session for an account that did not authenticate."""
    remote = world.cms["cm1"].remote
    results = []
    d = remote.request("bind", {"sid": 99, "user": "bob", "domain": "example.org", "resource": "x",
                                "grant": "forged", "secure": True})
    d.addCallback(results.append)
    world.settle()
    assert results[0][0]["condition"] == "not-authorized"
    assert world.sm.sessions_of("bob@example.org") == []


def test_users_chat_across_two_connection_managers() -> None:
    """alice on one process, bob on another: messages go through the SM both ways."""
    w = LinkWorld()
    w.add_cm("cm1")
    w.add_cm("cm2")
    w.start("cm1")
    w.start("cm2")
    alice = w.cms["cm1"].client()
    bob = w.cms["cm2"].client()
    alice.login(w, "alice", "a")
    bob.login(w, "bob", "b")
    alice.receive(chat("bob@example.org/b", "hello bob"))
    w.settle()
    [got] = bob.messages()
    assert got["from"] == "alice@example.org/a" and bodies([got]) == ["hello bob"]
    bob.receive(chat("alice@example.org/a", "hi alice"))
    w.settle()
    assert bodies(alice.messages()) == ["hi alice"]


def test_the_sm_stamps_from_itself(world: LinkWorld) -> None:
    """A relayed stanza carries the session's JID whatever the connection manager wrote."""
    alice = world.cms["cm1"].client()
    bob = world.cms["cm1"].client()
    alice.login(world, "alice", "a")
    bob.login(world, "bob", "b")
    remote = world.cms["cm1"].remote
    sid = remote._sid_of[alice.stream]
    remote.send_frame({"t": "recv", "sid": sid}, parse_stanza(
        "<message from='carol@example.org/x' to='bob@example.org/b' type='chat'><body>spoof</body></message>"))
    world.settle()
    [got] = bob.messages()
    assert got["from"] == "alice@example.org/a"


def test_ack_waits_until_the_sm_has_the_stanzas(world: LinkWorld) -> None:
    """XEP-0198: ``<a/>`` counts a client stanza only once it is safe in the SM process."""
    alice = world.cms["cm1"].client()
    alice.login(world, "alice", "a")
    alice.receive(f"<enable xmlns='{SM}'/>")
    alice.output()
    world.cms["cm1"].cut()
    alice.receive(chat("bob@example.org", "held") + f"<r xmlns='{SM}'/>")
    assert [e.name for e in alice.output()] == []
    world.advance(2)       # the SM reconnects; the stanza crosses and is acknowledged
    [answer] = [e for e in alice.output() if e.name == "a"]
    assert answer["h"] == "1"


# -- link failures ----------------------------------------------------------------------------

def test_stanzas_queued_while_the_link_is_down_arrive_once_after_reconnection(world: LinkWorld) -> None:
    """Both directions queue during the outage and are replayed, each exactly once."""
    alice = world.cms["cm1"].client()
    bob = world.cms["cm1"].client()
    alice.login(world, "alice", "a")
    bob.login(world, "bob", "b")
    world.cms["cm1"].cut()
    assert not world.peers["cm1"].connected
    alice.receive(chat("bob@example.org/b", "during the outage", "m1"))
    session = world.sm.session("bob@example.org/b")
    assert session is not None          # the SM keeps the session through the grace period
    world.harness.sm.deliver(parse_stanza(
        "<message from='carol@example.org/c' to='bob@example.org/b' type='chat'><body>from inside</body></message>"))
    assert bob.messages() == []
    world.advance(3)                    # back-off, reconnection, resumption of the link session
    assert world.peers["cm1"].connected
    assert sorted(bodies(bob.messages())) == ["during the outage", "from inside"]
    world.advance(1)
    assert bob.messages() == []
    assert alice.stream_error() is None and bob.stream_error() is None


def test_beyond_the_grace_period_clients_get_system_shutdown_and_sessions_end() -> None:
    """Past grace_period_s without the link: clean stream errors, unavailable on the SM side,
    and new clients are turned away."""
    w = LinkWorld()
    cm = w.add_cm("cm1")
    w.start("cm1")
    alice = cm.client()
    alice.login(w, "alice", "a")
    cm.refuse = True
    cm.cut()
    w.advance(LINK.grace_period_s + 1)
    assert alice.stream_error() == "system-shutdown"
    assert w.sm.sessions_of("alice@example.org") == []
    late = cm.client()
    late.output()
    assert late.stream_error() == "system-shutdown"
    cm.refuse = False
    w.advance(10)
    assert w.peers["cm1"].connected
    again = cm.client()
    assert again.login(w, "alice", "again") == "alice@example.org/again"


def test_no_clients_before_the_first_link_session() -> None:
    """A connection manager no session manager has reached yet turns clients away cleanly."""
    w = LinkWorld()
    cm = w.add_cm("cm1")
    client = cm.client()
    client.output()
    assert client.stream_error() == "system-shutdown"


def test_requests_time_out_as_temporary_auth_failure() -> None:
    """A SASL step the SM cannot answer in request_timeout_s fails temporarily."""
    w = LinkWorld()
    cm = w.add_cm("cm1")
    w.start("cm1")
    cm.refuse = True
    cm.cut()
    client = cm.client()
    client.start_auth("alice", "secret")
    w.advance(LINK.request_timeout_s + 1)
    failures = [e for e in client.output() if e.name == "failure"]
    assert [next(f.elements()).name for f in failures] == ["temporary-auth-failure"]


def test_a_restarted_connection_manager_means_a_new_session_and_nothing_lost() -> None:
    """The connection-manager process dies with a message its client never acknowledged:
    the SM unbinds the session (its contacts see it leave) and stores the message offline."""
    w = LinkWorld()
    cm = w.add_cm("cm1")
    w.start("cm1")
    bob = cm.client()
    bob.login(w, "bob", "b")
    bob.receive(f"<enable xmlns='{SM}'/>")
    bob.output()
    w.sm.deliver(parse_stanza("<message from='carol@example.org/c' to='bob@example.org/b' type='chat'>"
                              "<body>unacked</body></message>"))
    w.settle()
    assert bodies(bob.messages()) == ["unacked"]          # written, never acknowledged
    w.restart_cm("cm1")
    w.advance(3)
    assert w.peers["cm1"].connected
    assert w.sm.sessions_of("bob@example.org") == []
    stored = w.offline.messages.get("bob@example.org") if hasattr(w.offline, "messages") else None
    assert _offline_bodies(w) == ["unacked"], stored


def test_acknowledged_messages_are_settled_and_not_redelivered() -> None:
    """What the client acknowledged is reported settled; only the rest comes back."""
    w = LinkWorld()
    cm = w.add_cm("cm1")
    w.start("cm1")
    bob = cm.client()
    bob.login(w, "bob", "b")
    bob.receive(f"<enable xmlns='{SM}'/>")
    bob.output()
    for body in ("one", "two"):
        w.sm.deliver(parse_stanza("<message from='carol@example.org/c' to='bob@example.org/b' type='chat'>"
                                  f"<body>{body}</body></message>"))
    w.settle()
    assert bodies(bob.messages()) == ["one", "two"]
    # counting starts at <enable/>: h=1 acknowledges "one"
    bob.receive(f"<a xmlns='{SM}' h='1'/>")
    w.settle()
    handle = w.sm.session("bob@example.org/b").handle
    assert [xml for _i, xml, _t in handle.unsettled if "two" in xml] and len(handle.unsettled) == 1
    w.restart_cm("cm1")
    w.advance(3)
    assert _offline_bodies(w) == ["two"]


def test_a_client_without_stream_management_settles_on_write(world: LinkWorld) -> None:
    """Without XEP-0198 a stanza written to the socket is as delivered as it gets."""
    bob = world.cms["cm1"].client()
    bob.login(world, "bob", "b")
    world.sm.deliver(parse_stanza("<message from='carol@example.org/c' to='bob@example.org/b' type='chat'>"
                                  "<body>plain</body></message>"))
    world.settle()
    assert not world.sm.session("bob@example.org/b").handle.unsettled


def test_a_session_ending_on_the_cm_side_hands_back_what_was_not_given() -> None:
    """Stanzas the SM sent after the stream ended (in flight) are re-delivered by the SM."""
    w = LinkWorld()
    cm = w.add_cm("cm1")
    w.start("cm1")
    bob = cm.client()
    bob.login(w, "bob", "b")
    bob.stream.connectionLost(None)           # the client vanished; unbind is on its way
    w.sm.deliver(parse_stanza("<message from='carol@example.org/c' to='bob@example.org/b' type='chat'>"
                              "<body>in flight</body></message>"))
    w.settle()
    assert w.sm.sessions_of("bob@example.org") == []
    assert _offline_bodies(w) == ["in flight"]


def test_the_sm_shutting_down_ends_client_streams_at_once(world: LinkWorld) -> None:
    """``bye``: no waiting for the grace period when the SM stops on purpose."""
    alice = world.cms["cm1"].client()
    alice.login(world, "alice", "a")
    world.peers["cm1"].stop()
    world.settle()
    assert alice.stream_error() == "system-shutdown"
    assert world.sm.sessions_of("alice@example.org") == []


def test_reconnection_backs_off_with_jitter_up_to_the_cap() -> None:
    """Failed dials are retried after growing, jittered delays that stop growing at the cap."""
    w = LinkWorld()
    cm = w.add_cm("cm1")
    cm.refuse = True
    attempts = []
    original = w.peers["cm1"]._connect
    w.peers["cm1"]._connect = lambda f: (attempts.append(w.clock.seconds()), original(f))[1]
    w.peers["cm1"].start()
    for _ in range(200):
        w.clock.advance(0.25)
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert len(gaps) >= 6
    assert gaps[0] <= LINK.reconnect_min_s + 0.25
    assert max(gaps) <= LINK.reconnect_max_s + 0.25
    assert gaps[-1] >= LINK.reconnect_max_s / 2 - 0.25


def test_features_follow_the_sm(world: LinkWorld) -> None:
    """Stream features contributed by SM extensions reach the connection manager's streams."""
    element = domish.Element(("urn:example:feature", "thing"))
    world.sm.stream_features.append(lambda domain, authenticated: element if not authenticated else None)
    world.peers["cm1"].send_features()
    world.settle()
    client = world.cms["cm1"].client()
    client.receive(HEADER)
    [features] = client.output()
    assert next(features.elements("urn:example:feature", "thing"), None) is not None


def test_unauthenticated_iqs_are_answered_by_the_sm(world: LinkWorld) -> None:
    """XEP-0077 and the like: the IQ crosses the link and the SM's reply comes back."""
    world.sm.unauthenticated_iqs[("jabber:iq:register", "query")] = lambda domain, stanza: None
    client = world.cms["cm1"].client()
    client.receive(HEADER)
    client.output()
    client.receive("<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>")
    world.settle()
    [reply] = client.output()
    assert reply["type"] == "result" and reply["id"] == "r1"


def _offline_bodies(w: LinkWorld) -> list[str]:
    from twisted.internet import defer

    results = []
    d = defer.maybeDeferred(w.offline.fetch, "bob@example.org")
    d.addCallback(results.append)
    return [str(next(parse_stanza(xml).elements(None, "body"))) for xml in _xmls(results[0])]


def _xmls(items) -> list[str]:
    out = []
    for item in items:
        xml = getattr(item, "xml", None) or getattr(item, "stanza", None) or item
        out.append(xml if isinstance(xml, str) else xml.toXml())
    return out


def test_a_connection_manager_serves_only_domains_the_sm_hosts(world: LinkWorld) -> None:
    """The SM is the authority on hosted domains: one it does not host (any more) is refused
    even if the connection manager's config names it."""
    remote = world.cms["cm1"].remote
    assert remote.is_local_domain("example.org")
    remote.domains = frozenset({"example.org", "other.example"})
    assert not remote.is_local_domain("other.example")


def test_stream_resumption_stays_inside_the_connection_manager(world: LinkWorld) -> None:
    """XEP-0198: a dropped client resumes on the same connection-manager process; the SM
    keeps its one handle (nothing is unbound) and what it sent meanwhile arrives."""
    from twisted.internet.error import ConnectionLost
    from twisted.python.failure import Failure

    cm = world.cms["cm1"]
    bob = cm.client()
    bob.login(world, "bob", "b")
    bob.receive(f"<enable xmlns='{SM}' resume='true'/>")
    [enabled] = bob.output()
    handle = world.sm.session("bob@example.org/b").handle
    bob.stream.connectionLost(Failure(ConnectionLost()))
    world.settle()
    world.sm.deliver(parse_stanza("<message from='carol@example.org/c' to='bob@example.org/b' type='chat'>"
                                  "<body>while detached</body></message>"))
    world.settle()
    again = cm.client()
    again.start_auth("bob", "secret")
    world.settle()
    assert again.output()[0].name == "success"
    again.view.restart()
    again.receive(HEADER)
    again.output()
    again.receive(f"<resume xmlns='{SM}' previd='{enabled['id']}' h='0'/>")
    out = again.output()
    assert out[0].name == "resumed"
    assert bodies([e for e in out if e.name == "message"]) == ["while detached"]
    assert world.sm.session("bob@example.org/b").handle is handle
    again.receive(chat("carol@example.org", "after resuming"))
    world.settle()
    assert world.sm.sessions_of("bob@example.org") != []
