"""XEP-0198 Stream Management on client streams, over a StringTransport with a task.Clock:
enabling, ack counting and validation, resumption after a dropped connection, and what
becomes of unacknowledged stanzas when a session ends for good."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from tests.support.c2s_harness import HEADER, C2SHarness
from tests.support.sm_harness import SMHarness
from tigasepy.c2s.stream_management import (
    MODULUS, PROTOCOLS, SM, AckState, DetachedSession, delay_stamp, parse_h,
)
from tigasepy.config import C2SConfig, StreamManagementConfig
from tigasepy.extensions.message import MessageDelivery
from tigasepy.extensions.offline import OfflineMessages
from tigasepy.extensions.ping import Ping
from tigasepy.extensions.session import LegacySession
from tigasepy.interfaces import IClientSession
from tigasepy.sm.events import SessionEnded
from tigasepy.storage.interfaces import IAccountStore, IOfflineStore, IRosterStore
from tigasepy.storage.memory import MemoryAccountStore, MemoryOfflineStore, MemoryRosterStore
from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import error_condition

SM_CONFIG = StreamManagementConfig(resume_timeout_s=120, ack_request_every_stanzas=5, ack_request_every_s=30,
                                   ack_timeout_s=60, max_unacked=20, max_detached_per_account=2)


@pytest.fixture
def stores():
    accounts = MemoryAccountStore()
    for user in ("alice", "bob"):
        accounts.create(f"{user}@example.org", [])
    return {IAccountStore: accounts, IRosterStore: MemoryRosterStore(), IOfflineStore: MemoryOfflineStore()}


@pytest.fixture
def world(stores):
    harness = SMHarness([(Ping, None), (LegacySession, None), (MessageDelivery, None), (OfflineMessages, None)],
                        stores)
    harness.ended = []
    harness.sm.hooks.add(SessionEnded, lambda event: harness.ended.append(event.session.full))
    return harness


@pytest.fixture
def sm(world):
    return world.sm


def config(**changes) -> C2SConfig:
    return replace(C2SConfig(), tls_required=False, stream_management=replace(SM_CONFIG, **changes))


@pytest.fixture
def alice(sm, world):
    c2s = C2SHarness(sm, config=config(), clock=world.clock)
    c2s.login("alice", resource="home")
    return c2s


def sm_el(c2s, name):
    """The elements named ``name`` in the SM namespace among what the server wrote."""
    return [e for e in c2s.output() if e.uri == SM and e.name == name]


def enable(c2s, resume=True) -> str | None:
    c2s.receive(f"<enable xmlns='{SM}'" + (" resume='true'/>" if resume else "/>"))
    [enabled] = sm_el(c2s, "enabled")
    return enabled.getAttribute("id")


def authenticate(c2s, user="alice"):
    """Negotiate SASL and restart the stream; returns the post-authentication features."""
    c2s.receive(HEADER)
    c2s.output()
    token = base64.b64encode(f"\0{user}\0secret".encode()).decode()
    c2s.receive(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{token}</auth>")
    [success] = c2s.output()
    assert success.name == "success"
    c2s.view.restart()
    c2s.receive(HEADER)
    [features] = c2s.output()
    return features


def drop(c2s):
    """The TCP connection goes away without </stream:stream>."""
    c2s.stream.connectionLost(Failure(ConnectionLost()))


def deliver(sm, xml):
    sm.deliver(parse_stanza(xml))


def chat(body, to="alice@example.org/home", sender="bob@example.org/b", id_=None):
    id_attr = f" id='{id_}'" if id_ else ""
    return f"<message from='{sender}' to='{to}' type='chat'{id_attr}><body>{body}</body></message>"


def bodies(elements):
    return [str(e.body) for e in elements if e.name == "message" and e.body is not None]


def offline_bodies(stores, owner="alice@example.org"):
    stored = stores[IOfflineStore].fetch(owner).result
    return [parse_stanza(m.xml) for m in stored]


# -- negotiation ------------------------------------------------------------------------------

def test_sm_is_offered_after_authentication_only(sm, world):
    c2s = C2SHarness(sm, config=config(), clock=world.clock)
    c2s.receive(HEADER)
    [before] = c2s.output()
    assert next(before.elements(SM, "sm"), None) is None
    c2s.view.restart()
    c2s2 = c2s.another_connection()
    features = authenticate(c2s2)
    assert next(features.elements(SM, "sm"), None) is not None


def test_sm_is_not_offered_when_disabled(sm, world):
    c2s = C2SHarness(sm, config=config(enabled=False), clock=world.clock)
    features = authenticate(c2s)
    assert next(features.elements(SM, "sm"), None) is None
    c2s.receive("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    c2s.output()
    c2s.receive(f"<enable xmlns='{SM}'/>")
    [failed] = sm_el(c2s, "failed")
    assert next(failed.elements()).name == "feature-not-implemented"


def test_enable_before_bind_fails_and_the_stream_goes_on(sm, world):
    c2s = C2SHarness(sm, config=config(), clock=world.clock)
    authenticate(c2s)
    c2s.receive(f"<enable xmlns='{SM}'/>")
    [failed] = sm_el(c2s, "failed")
    assert next(failed.elements()).name == "unexpected-request"
    c2s.receive("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    [result] = c2s.output()
    assert result["type"] == "result"


def test_enable_with_resume_gets_an_id_and_the_configured_max(alice):
    alice.receive(f"<enable xmlns='{SM}' resume='true'/>")
    [enabled] = sm_el(alice, "enabled")
    assert enabled.getAttribute("resume") == "true"
    assert len(enabled["id"]) >= 16
    assert enabled["max"] == "120"
    assert enabled.getAttribute("location") is None


def test_enable_honours_a_lower_client_max_and_names_the_location(sm, world):
    c2s = C2SHarness(sm, config=config(location="xmpp2.example.org:5222"), clock=world.clock)
    c2s.login()
    c2s.receive(f"<enable xmlns='{SM}' resume='1' max='30'/>")
    [enabled] = sm_el(c2s, "enabled")
    assert (enabled["max"], enabled["location"]) == ("30", "xmpp2.example.org:5222")
    c2s.receive(f"<enable xmlns='{SM}' resume='1' max='9999'/>")
    [failed] = sm_el(c2s, "failed")   # and only one enable per stream
    assert next(failed.elements()).name == "unexpected-request"


def test_enable_without_resume_gets_no_id(alice):
    assert enable(alice, resume=False) is None


def test_no_resumption_when_the_timeout_is_zero(sm, world):
    c2s = C2SHarness(sm, config=config(resume_timeout_s=0), clock=world.clock)
    c2s.login()
    assert enable(c2s) is None


# -- acks -------------------------------------------------------------------------------------

def test_r_is_answered_with_the_count_of_stanzas_handled_since_enable(alice):
    alice.receive("<iq type='get' id='p0' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>")
    enable(alice)
    alice.receive(f"<r xmlns='{SM}'/>")
    [a] = sm_el(alice, "a")
    assert a["h"] == "0"
    for i in range(3):
        alice.receive(f"<iq type='get' id='p{i + 1}' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>")
    alice.receive(f"<r xmlns='{SM}'/><r xmlns='{SM}'/>")
    assert [a["h"] for a in sm_el(alice, "a")] == ["3", "3"]   # nonzas are not counted


def test_r_and_a_before_enable_are_ignored(alice):
    alice.receive(f"<r xmlns='{SM}'/><a xmlns='{SM}' h='5'/>")
    assert alice.output() == []
    assert alice.stream_error() is None


def test_server_requests_an_ack_every_n_stanzas(sm, alice):
    enable(alice)
    for i in range(4):
        deliver(sm, chat(f"m{i}"))
    out = alice.output()
    assert [e.name for e in out] == ["message"] * 4
    deliver(sm, chat("m4"))
    out = alice.output()
    assert [(e.uri, e.name) for e in out] == [(None, "message"), (SM, "r")]
    # no second request while the first is unanswered
    for i in range(6):
        deliver(sm, chat(f"n{i}"))
    assert not [e for e in alice.output() if e.name == "r"]
    alice.receive(f"<a xmlns='{SM}' h='11'/>")   # acks all 11: nothing left to ask about
    assert alice.stream.acks.queue == type(alice.stream.acks.queue)()
    assert alice.output() == []


def test_server_requests_an_ack_after_some_seconds(sm, alice):
    enable(alice)
    deliver(sm, chat("lonely"))
    alice.output()
    alice.clock.advance(29)
    assert sm_el(alice, "r") == []
    alice.clock.advance(1)
    assert len(sm_el(alice, "r")) == 1


def test_acks_empty_the_queue_and_requests_resume_for_the_rest(sm, alice):
    enable(alice)
    for i in range(5):
        deliver(sm, chat(f"m{i}"))
    alice.output()
    alice.receive(f"<a xmlns='{SM}' h='2'/>")
    assert [parse_stanza(x).body.__str__() for x, _ in alice.stream.acks.queue] == ["m2", "m3", "m4"]
    alice.clock.advance(30)
    assert len(sm_el(alice, "r")) == 1


def test_h_beyond_what_was_sent_is_a_stream_error(sm, alice, stores):
    enable(alice)
    deliver(sm, chat("one"))
    deliver(sm, chat("two"))
    alice.receive(f"<a xmlns='{SM}' h='10'/>")
    alice.output()
    assert alice.stream_error() == "undefined-condition"
    error = [e for e in alice.view.elements if e.name == "error"][-1]
    too_high = next(error.elements(SM, "handled-count-too-high"))
    assert (too_high["h"], too_high["send-count"]) == ("10", "2")
    assert "only sent you 2" in str(next(error.elements(ns.STREAM_ERRORS, "text")))
    # the session ended; what was not acknowledged was stored
    assert bodies(offline_bodies(stores)) == ["one", "two"]


def test_a_without_a_valid_h_is_a_stream_error(alice):
    enable(alice)
    alice.receive(f"<a xmlns='{SM}' h='-1'/>")
    alice.output()
    assert alice.stream_error() == "bad-format"


def test_unanswered_ack_request_drops_the_connection(sm, alice):
    enable(alice)
    for i in range(5):
        deliver(sm, chat(f"m{i}"))
    alice.output()
    alice.clock.advance(59)
    assert not alice.transport.disconnecting
    alice.clock.advance(1)
    assert alice.transport.disconnected   # aborted: no </stream:stream>, the session stays resumable


def test_too_many_unacknowledged_stanzas_end_the_stream(sm, alice, stores):
    enable(alice)
    for i in range(21):
        deliver(sm, chat(f"m{i}"))
    alice.output()
    assert alice.stream_error() == "policy-violation"
    assert sm.session("alice@example.org/home") is None
    assert len(offline_bodies(stores)) == 21


def test_ack_state_counts_modulo_2_to_the_32():
    from twisted.words.protocols.jabber.jid import JID
    acks = AckState("a@b", JID("a@b/c"))
    acks.acked = MODULUS - 2
    for i in range(4):
        acks.queue.append((f"<message id='{i}'/>", 0.0))
    assert acks.sent == 2
    assert acks.check(1) and not acks.check(3)
    acks.ack(0)
    assert len(acks.queue) == 2 and acks.acked == 0
    assert parse_h("4294967295") == MODULUS - 1
    assert parse_h("4294967296") is None and parse_h("x") is None and parse_h(None) is None


# -- resumption -------------------------------------------------------------------------------

def resume(c2s, previd, h, user="alice"):
    authenticate(c2s, user)
    c2s.receive(f"<resume xmlns='{SM}' previd='{previd}' h='{h}'/>")
    return c2s.output()


def test_dropped_connection_keeps_the_session_and_queues(sm, world, alice):
    enable(alice)
    drop(alice)
    session = sm.session("alice@example.org/home")
    assert session is not None and isinstance(session.handle, DetachedSession)
    verifyObject(IClientSession, session.handle)
    assert world.ended == []          # no unavailable broadcast yet
    deliver(sm, chat("while away"))
    assert [parse_stanza(x).body.__str__() for x, _ in session.handle.acks.queue] == ["while away"]


def test_resume_resends_what_was_not_acknowledged_with_delay(sm, world, alice):
    token = enable(alice)
    alice.receive("<iq type='get' id='p1' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>")
    deliver(sm, chat("seen"))
    deliver(sm, chat("lost in transit"))
    alice.output()
    drop(alice)
    world.clock.advance(10)
    deliver(sm, chat("while away"))
    again = alice.another_connection()
    out = resume(again, token, h=2)     # the ping result and "seen" arrived
    assert [(e.uri, e.name) for e in out][:1] == [(SM, "resumed")]
    resumed = out[0]
    assert (resumed["previd"], resumed["h"]) == (token, "1")
    assert bodies(out) == ["lost in transit", "while away"]
    stamps = [next(e.elements(ns.DELAY, "delay"))["stamp"] for e in out if e.name == "message"]
    assert stamps == [delay_stamp(0), delay_stamp(10)]
    assert out[-1].name == "r"           # and asks for an ack of the resent ones
    session = sm.session("alice@example.org/home")
    assert session.handle is again.stream
    assert world.ended == []
    # the stream goes on: counting continues, stanzas flow both ways
    deliver(sm, chat("after"))
    assert bodies(again.output()) == ["after"]
    again.receive("<iq type='get' id='p2' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>")
    again.receive(f"<r xmlns='{SM}'/>")
    assert [e["h"] for e in again.output() if e.name == "a"] == ["2"]
    assert world.clock.getDelayedCalls() and all(c.active() for c in world.clock.getDelayedCalls())


def test_resume_with_an_unknown_id_fails_and_binding_still_works(sm, alice):
    enable(alice)
    drop(alice)
    again = alice.another_connection()
    out = resume(again, "no-such-id", h=0)
    [failed] = [e for e in out if e.name == "failed"]
    assert next(failed.elements()).name == "item-not-found"
    again.receive("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  "<resource>other</resource></bind></iq>")
    [result] = again.output()
    assert result["type"] == "result"


def test_another_account_cannot_resume_the_session(sm, world, alice):
    token = enable(alice)
    drop(alice)
    deliver(sm, chat("private"))
    mallory = alice.another_connection()
    out = resume(mallory, token, h=0, user="bob")
    [failed] = [e for e in out if e.name == "failed"]
    assert next(failed.elements()).name == "item-not-found"
    assert failed.getAttribute("h") is None
    assert bodies(out) == []
    assert isinstance(sm.session("alice@example.org/home").handle, DetachedSession)
    # alice herself still can
    again = alice.another_connection()
    assert bodies(resume(again, token, h=0)) == ["private"]


def test_resume_with_h_too_high_is_a_stream_error_and_the_session_waits_on(sm, alice):
    token = enable(alice)
    deliver(sm, chat("one"))
    drop(alice)
    again = alice.another_connection()
    resume(again, token, h=5)
    assert again.stream_error() == "undefined-condition"
    assert isinstance(sm.session("alice@example.org/home").handle, DetachedSession)


def test_resume_while_the_old_connection_is_half_open_replaces_it(sm, world, alice):
    token = enable(alice)
    deliver(sm, chat("unacked"))
    alice.output()
    again = alice.another_connection()
    out = resume(again, token, h=0)
    assert out[0].name == "resumed"
    assert bodies(out) == ["unacked"]
    alice.output()
    assert alice.stream_error() == "conflict"
    assert sm.session("alice@example.org/home").handle is again.stream
    drop(alice)                          # the old connection finally goes: nothing changes
    assert sm.session("alice@example.org/home").handle is again.stream
    assert world.ended == []


def test_resume_on_a_bound_stream_fails(sm, alice):
    token = enable(alice)
    alice.receive(f"<resume xmlns='{SM}' previd='{token}' h='0'/>")
    [failed] = sm_el(alice, "failed")
    assert next(failed.elements()).name == "unexpected-request"


def test_a_resumed_session_can_drop_and_resume_again(sm, alice):
    token = enable(alice)
    drop(alice)
    deliver(sm, chat("first"))
    second = alice.another_connection()
    assert bodies(resume(second, token, h=0)) == ["first"]
    second.receive(f"<a xmlns='{SM}' h='1'/>")
    drop(second)
    deliver(sm, chat("second"))
    third = alice.another_connection()
    assert bodies(resume(third, token, h=1)) == ["second"]


# -- the end of a session -------------------------------------------------------------------------

def test_after_the_timeout_unacked_messages_go_offline_and_iqs_bounce(sm, world, alice, stores):
    token = enable(alice)
    bob = C2SHarness(sm, config=config(), clock=world.clock)
    bob.login("bob", resource="b")
    bob.receive("<iq type='get' id='v1' to='alice@example.org/home'><query xmlns='jabber:iq:version'/></iq>")
    deliver(sm, chat("before the drop"))
    alice.output()
    drop(alice)
    world.clock.advance(5)
    deliver(sm, chat("while away"))
    bob.output()
    world.clock.advance(114)          # 119 s after the drop
    assert world.ended == []
    world.clock.advance(1)
    assert world.ended == ["alice@example.org/home"]
    assert sm.session("alice@example.org/home") is None
    stored = offline_bodies(stores)
    assert bodies(stored) == ["before the drop", "while away"]
    stamps = [next(m.elements(ns.DELAY, "delay"))["stamp"] for m in stored]
    assert stamps == [delay_stamp(0), delay_stamp(5)]      # the original times, one stamp each
    assert all(len(list(m.elements(ns.DELAY, "delay"))) == 1 for m in stored)
    [error] = bob.output()
    assert (error.name, error["type"], error["id"]) == ("iq", "error", "v1")
    assert error["from"] == "alice@example.org/home"
    assert error_condition(error) == "service-unavailable"
    assert world.clock.getDelayedCalls() == [c for c in world.clock.getDelayedCalls() if c.active()]
    # the token is dead; the server remembers how far it got
    again = alice.another_connection()
    [failed] = [e for e in resume(again, token, h=0) if e.name == "failed"]
    assert next(failed.elements()).name == "item-not-found"
    assert failed["h"] == "0"


def test_unacked_messages_go_to_another_resource_when_there_is_one(sm, world, alice, stores):
    enable(alice)
    other = C2SHarness(sm, config=config(), clock=world.clock)
    other.login("alice", resource="work")
    sm.session("alice@example.org/work").available = True
    deliver(sm, chat("for home"))
    other.output()
    drop(alice)
    world.clock.advance(120)
    [moved] = other.output()
    assert str(moved.body) == "for home"
    assert next(moved.elements(ns.DELAY, "delay"))["stamp"] == delay_stamp(0)
    assert offline_bodies(stores) == []


def test_clean_close_ends_the_session_at_once_and_stores_unacked_messages(sm, world, alice, stores):
    enable(alice)
    deliver(sm, chat("unacked"))
    alice.output()
    alice.receive("</stream:stream>")
    assert world.ended == ["alice@example.org/home"]
    assert bodies(offline_bodies(stores)) == ["unacked"]


def test_acked_stanzas_are_not_stored(sm, world, alice, stores):
    enable(alice)
    deliver(sm, chat("one"))
    deliver(sm, chat("two"))
    alice.receive(f"<a xmlns='{SM}' h='1'/></stream:stream>")
    assert bodies(offline_bodies(stores)) == ["two"]


def test_chat_states_groupchat_and_presence_are_not_stored(sm, alice, stores):
    enable(alice)
    deliver(sm, "<message from='bob@example.org/b' to='alice@example.org/home' type='chat'>"
                "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    deliver(sm, "<presence from='bob@example.org/b' to='alice@example.org/home'/>")
    alice.receive("</stream:stream>")
    assert offline_bodies(stores) == []


def test_binding_the_same_resource_ends_the_detached_session(sm, world, alice, stores):
    enable(alice)
    drop(alice)
    deliver(sm, chat("queued"))
    fresh = alice.another_connection()
    fresh.login("alice", resource="home")
    assert world.ended == ["alice@example.org/home"]
    assert sm.session("alice@example.org/home").handle is fresh.stream
    assert bodies(offline_bodies(stores)) == ["queued"]
    assert alice.factory.resumption.detached_count() == 0
    assert [c for c in world.clock.getDelayedCalls() if "_expire" in repr(c)] == []


def test_detached_sessions_per_account_are_bounded(sm, world, stores):
    streams = []
    first = C2SHarness(sm, config=config(), clock=world.clock)
    for resource in ("r1", "r2", "r3"):
        c2s = first.another_connection()
        c2s.login("alice", resource=resource)
        enable(c2s)
        streams.append(c2s)
    for c2s in streams:
        drop(c2s)
    assert world.ended == ["alice@example.org/r1"]    # the oldest made room
    assert streams[0].factory.resumption.detached_count() == 2


def test_detached_session_with_too_much_queued_ends(sm, world, alice, stores):
    enable(alice)
    drop(alice)
    for i in range(21):
        deliver(sm, chat(f"m{i}"))
    assert world.ended == ["alice@example.org/home"]
    assert len(offline_bodies(stores)) == 21


def test_idle_timeout_keeps_a_resumable_session(sm, world):
    c2s = C2SHarness(sm, config=replace(config(), idle_timeout_s=100), clock=world.clock)
    c2s.login()
    token = enable(c2s)
    world.clock.advance(100)
    c2s.output()
    assert c2s.stream_error() == "connection-timeout"
    c2s.stream.connectionLost(Failure(ConnectionLost()))
    assert isinstance(sm.session("alice@example.org/home").handle, DetachedSession)
    again = c2s.another_connection()
    assert resume(again, token, h=0)[0].name == "resumed"


def test_shutdown_ends_detached_sessions_and_cancels_timers(sm, world, alice, stores):
    enable(alice)
    deliver(sm, chat("unacked"))
    drop(alice)
    alice.factory.close_all()
    assert world.ended == ["alice@example.org/home"]
    assert bodies(offline_bodies(stores)) == ["unacked"]
    assert [c for c in world.clock.getDelayedCalls() if c.active()] == []


def test_protocols_are_listed_in_the_doap():
    import re
    from pathlib import Path
    doap = (Path(__file__).resolve().parents[2] / "tigasepy.doap").read_text()
    for protocol in PROTOCOLS:
        number = protocol.spec.split("-")[1]
        block = re.search(rf"xep-{number}\.html\"/>\s*<xmpp:version>([^<]+)</xmpp:version>", doap)
        assert block is not None, f"{protocol.spec} is not in tigasepy.doap"
        assert block.group(1) == protocol.version


def test_a_token_cannot_be_taken_to_another_hosted_domain(stores):
    """alice@example.org cannot restart her authenticated stream to other.org and resume
    (or bind) as alice@other.org."""
    world = SMHarness([(Ping, None)], stores, domains=("example.org", "other.org"))
    victim = C2SHarness(world.sm, config=config(), clock=world.clock)
    victim.login("alice", resource="home")
    token = enable(victim)
    drop(victim)
    attacker = victim.another_connection()
    attacker.receive(HEADER)
    attacker.output()
    token64 = base64.b64encode(b"\0alice\0secret").decode()
    attacker.receive(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{token64}</auth>")
    attacker.output()
    attacker.view.restart()
    attacker.receive(HEADER.replace("to='example.org'", "to='other.org'"))
    attacker.receive(f"<resume xmlns='{SM}' previd='{token}' h='0'/>")
    attacker.output()
    assert attacker.stream_error() == "not-authorized"
    assert isinstance(world.sm.session("alice@example.org/home").handle, DetachedSession)


def test_a_redelivered_message_is_marked_for_observers(sm, alice, stores):
    from tigasepy.sm.events import PASS, REDELIVERED, MessageToLocal
    seen = []
    sm.hooks.add(MessageToLocal, lambda event: seen.append(event.extra.get(REDELIVERED, False)) or PASS, 1000)
    enable(alice)
    deliver(sm, chat("once"))
    alice.receive("</stream:stream>")
    assert seen == [False, True]
    assert bodies(offline_bodies(stores)) == ["once"]
