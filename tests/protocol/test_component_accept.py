"""XEP-0114 accept side over a StringTransport: handshake, address checks, conflict, routing."""

from __future__ import annotations

from dataclasses import replace

import pytest
from twisted.words.xish import domish

from support.component_harness import SECRET, AcceptWorld
from tigasepy.components import ComponentListenerConfig
from tigasepy.components.external import ComponentAcceptStream, UnavailableComponent, handshake_digest
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import error_condition


def message(to: str, frm: str | None = None, body: str = "hi", **attrs: str) -> domish.Element:
    stanza = domish.Element((None, "message"))
    stanza["to"] = to
    if frm is not None:
        stanza["from"] = frm
    for key, value in attrs.items():
        stanza[key] = value
    stanza.addElement("body", content=body)
    return stanza


def test_handshake_digest_matches_the_xep_algorithm():
    # SHA-1 over stream id + secret, lowercase hex (XEP-0114 section 3).
    assert handshake_digest("3BF96D32", "secret") == "b09ea9b3b7f586be8a08d0a3dd7466f110aeb136"  # sha1sum of "3BF96D32secret"
    assert handshake_digest("id", "sécret") == handshake_digest("id", "sécret").lower()


def test_server_answers_the_header_with_a_fresh_stream_id_and_the_component_domain():
    world = AcceptWorld()
    first, second = world.connect(), world.connect()
    id1, id2 = first.open(), second.open()
    assert first.view.header["from"] == "comp.example.org"
    assert first.view.header["xmlns"] == ns.COMPONENT
    assert len(id1) >= 16 and id1 != id2


def test_a_correct_handshake_is_acknowledged_and_routes_the_domain_to_the_stream():
    world = AcceptWorld()
    conn = world.connect()
    [ack] = conn.authenticate()
    assert (ack.name, ack.uri, ack.children) == ("handshake", None, [])
    assert world.router.destination("comp.example.org") is conn.stream
    assert world.factory.is_connected("comp.example.org")
    assert world.factory.unauthenticated == 0


def test_the_handshake_is_accepted_in_uppercase_hex_too():
    world = AcceptWorld()
    conn = world.connect()
    stream_id = conn.open()
    conn.receive(f"<handshake>{handshake_digest(stream_id, SECRET).upper()}</handshake>")
    [ack] = conn.output()
    assert ack.name == "handshake"


@pytest.mark.parametrize("handshake", [
    "<handshake>{wrong}</handshake>", "<handshake/>", "<handshake>zz</handshake>", "<handshake>\u00e9\u00e9</handshake>",
])
def test_a_wrong_handshake_ends_the_stream_with_not_authorized(handshake):
    world = AcceptWorld()
    conn = world.connect()
    stream_id = conn.open()
    conn.receive(handshake.format(wrong=handshake_digest(stream_id, "not-the-secret")))
    conn.output()
    assert conn.view.stream_error() == "not-authorized"
    assert conn.view.ended and conn.closed
    assert isinstance(world.router.destination("comp.example.org"), UnavailableComponent)


def test_a_handshake_computed_for_another_stream_id_is_refused():
    world = AcceptWorld()
    first, replay = world.connect(), world.connect()
    first_id = first.open()
    replay.open()
    replay.receive(f"<handshake>{handshake_digest(first_id, SECRET)}</handshake>")
    replay.output()
    assert replay.view.stream_error() == "not-authorized"


def test_the_secret_and_digest_are_never_logged(caplog):
    from twisted.logger import globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        world = AcceptWorld()
        conn = world.connect()
        stream_id = conn.open()
        digest = handshake_digest(stream_id, "wrong-one")
        conn.receive(f"<handshake>{digest}</handshake>")
        good = world.connect()
        good.authenticate()
    finally:
        globalLogPublisher.removeObserver(events.append)
    text = repr(events)
    assert SECRET not in text and digest not in text
    assert "wrong handshake" in text
    assert SECRET not in repr(world.factory.components)


@pytest.mark.parametrize("header,condition", [
    ("<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' "
     "to='other.example.org'>", "host-unknown"),
    ("<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams'>",
     "improper-addressing"),
    ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
     "to='comp.example.org'>", "invalid-namespace"),
    ("<stream:stream xmlns='jabber:component:accept' xmlns:stream='urn:nope' to='comp.example.org'>",
     "invalid-namespace"),
    ("<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' "
     "to='example.org'>", "host-unknown"),
])
def test_bad_stream_headers_get_a_header_then_a_stream_error(header, condition):
    world = AcceptWorld()
    conn = world.connect()
    conn.receive(header)
    conn.output()
    assert conn.view.header is not None
    assert conn.view.stream_error() == condition
    assert conn.closed


def test_stanzas_before_the_handshake_are_refused():
    world = AcceptWorld()
    conn = world.connect()
    conn.open()
    conn.receive("<message to='alice@example.org' from='comp.example.org'><body>x</body></message>")
    conn.output()
    assert conn.view.stream_error() == "not-authorized"
    assert world.local.received == []


def test_a_second_connection_for_a_connected_domain_gets_conflict_and_the_first_stays():
    world = AcceptWorld()
    first = world.connect()
    first.authenticate()
    second = world.connect()
    second.authenticate()
    assert second.view.stream_error() == "conflict"
    assert second.closed and not first.closed
    assert world.router.destination("comp.example.org") is first.stream
    first.receive("<message to='alice@example.org' from='comp.example.org'><body>still here</body></message>")
    assert [str(m.body) for m in world.local.take()] == ["still here"]


def test_after_a_disconnect_the_domain_bounces_service_unavailable_then_reconnecting_works():
    world = AcceptWorld()
    first = world.connect()
    first.authenticate()
    first.stream.connectionLost()
    assert not world.factory.is_connected("comp.example.org")
    world.router.route(message("comp.example.org", "alice@example.org/a", id="m1"))
    [bounce] = world.local.take()
    assert (bounce["to"], bounce["from"], bounce["type"]) == ("alice@example.org/a", "comp.example.org", "error")
    assert error_condition(bounce) == "service-unavailable"
    again = world.connect()
    again.authenticate()
    world.router.route(message("bot@comp.example.org", "alice@example.org/a", body="back"))
    [delivered] = again.output()
    assert str(delivered.body) == "back"


def test_before_any_connection_the_domain_is_held_and_never_goes_to_the_default_route():
    world = AcceptWorld()
    taken = []
    world.router.default = type("S2S", (), {"receive": lambda self, s: taken.append(s)})()
    world.router.route(message("comp.example.org", "alice@example.org/a"))
    assert taken == []
    assert error_condition(world.local.take()[0]) == "service-unavailable"


@pytest.mark.parametrize("stanza", [
    "<presence to='comp.example.org' from='alice@example.org/a' type='unavailable'/>",
    "<message to='comp.example.org' from='alice@example.org/a' type='error'><error type='cancel'/></message>",
    "<iq to='comp.example.org' from='alice@example.org/a' type='result' id='r'/>",
])
def test_stanzas_that_must_not_be_answered_are_not_bounced(stanza):
    from tigasepy.stream.parser import parse_stanza

    world = AcceptWorld()
    world.router.route(parse_stanza(stanza))
    assert world.local.received == []


def test_detach_closes_streams_with_system_shutdown_and_gives_the_routes_up():
    world = AcceptWorld()
    conn = world.connect()
    conn.authenticate()
    world.factory.detach()
    conn.output()
    assert conn.view.stream_error() == "system-shutdown"
    assert world.router.destination("comp.example.org") is None


# -- stanzas from the component ---------------------------------------------------------------

@pytest.fixture
def ready():
    world = AcceptWorld()
    conn = world.connect()
    conn.authenticate()
    return world, conn


@pytest.mark.parametrize("sender", [
    "comp.example.org", "bot@comp.example.org", "bot@comp.example.org/res", "comp.example.org/res",
    "Bot@COMP.example.org",
])
def test_a_component_may_send_from_its_domain_or_any_jid_in_it(ready, sender):
    world, conn = ready
    conn.receive(f"<message to='alice@example.org' from='{sender}'><body>x</body></message>")
    [routed] = world.local.take()
    assert routed["from"].split("/")[0].rpartition("@")[2] == "comp.example.org"
    assert not conn.closed


@pytest.mark.parametrize("sender", [
    "example.org", "alice@example.org", "admin@example.org/x", "evil@other.org", "x.comp.example.org",
    "comp.example.org.evil.org", "bot@comp.example.org@example.org", "@comp.example.org", "a@/b", "comp.example.org/",
])
def test_any_other_from_ends_the_stream_with_invalid_from(ready, sender):
    world, conn = ready
    conn.receive(f"<message to='alice@example.org' from='{sender}'><body>x</body></message>")
    conn.output()
    assert conn.view.stream_error() == "invalid-from"
    assert world.local.received == []
    assert isinstance(world.router.destination("comp.example.org"), UnavailableComponent)


def test_a_missing_from_is_stamped_with_the_component_domain(ready):
    world, conn = ready
    conn.receive("<iq to='example.org' type='get' id='v'><query xmlns='jabber:iq:version'/></iq>")
    [routed] = world.local.take()
    assert routed["from"] == "comp.example.org"


def test_a_stanza_without_to_gets_bad_request(ready):
    world, conn = ready
    conn.receive("<iq from='comp.example.org' type='get' id='q1'><ping xmlns='urn:xmpp:ping'/></iq>")
    [reply] = conn.output()
    assert (reply["type"], reply["id"], reply["to"]) == ("error", "q1", "comp.example.org")
    assert error_condition(reply) == "bad-request"
    assert world.local.received == [] and not conn.closed


def test_a_malformed_to_gets_jid_malformed(ready):
    world, conn = ready
    conn.receive("<message from='bot@comp.example.org' to='a@b@c'><body>x</body></message>")
    [reply] = conn.output()
    assert error_condition(reply) == "jid-malformed"
    assert reply["to"] == "bot@comp.example.org"


def test_non_stanza_elements_end_the_stream(ready):
    _world, conn = ready
    conn.receive("<foo xmlns='urn:bar'/>")
    conn.output()
    assert conn.view.stream_error() == "unsupported-stanza-type"


def test_stanzas_to_the_component_are_written_in_the_component_namespace(ready):
    world, conn = ready
    world.router.route(message("bot@comp.example.org/r", "alice@example.org/a", body="a <b> & c", type="chat"))
    raw = conn.transport.value().decode()
    assert "xmlns=" not in raw.split(">", 1)[0]
    [delivered] = conn.output()
    assert (delivered["from"], delivered["to"], str(delivered.body)) == (
        "alice@example.org/a", "bot@comp.example.org/r", "a <b> & c")
    assert conn.view.header["xmlns"] == ns.COMPONENT


def test_a_stanza_to_the_component_without_from_is_stamped_with_the_server_domain(ready):
    world, conn = ready
    world.router.route(message("comp.example.org"))
    [delivered] = conn.output()
    assert delivered["from"] == "example.org"


def test_an_oversized_stanza_ends_the_stream():
    world = AcceptWorld(config=replace(ComponentListenerConfig(), stanza_size_limit_bytes=10000))
    conn = world.connect()
    conn.authenticate()
    conn.receive("<message to='alice@example.org'><body>" + "x" * 20000 + "</body></message>")
    conn.output()
    assert conn.view.stream_error() == "policy-violation"
    assert world.local.received == []


def test_a_component_that_never_handshakes_is_dropped_after_the_timeout():
    world = AcceptWorld(config=replace(ComponentListenerConfig(), handshake_timeout_s=5))
    conn = world.connect()
    conn.open()
    world.clock.advance(4)
    assert not conn.closed
    world.clock.advance(2)
    conn.output()
    assert conn.view.stream_error() == "connection-timeout"


def test_too_many_unauthenticated_connections_are_refused():
    world = AcceptWorld(config=replace(ComponentListenerConfig(), max_unauthenticated=2))
    first, second, third = world.connect(), world.connect(), world.connect()
    third.output()
    assert third.view.stream_error() == "resource-constraint"
    assert not first.closed and not second.closed


def test_a_silent_component_is_pinged_and_dropped_when_it_stays_silent():
    world = AcceptWorld(config=replace(ComponentListenerConfig(), keepalive_s=60, keepalive_timeout_s=30))
    conn = world.connect()
    conn.authenticate()
    world.clock.advance(59)
    assert conn.output() == []
    world.clock.advance(1)
    [ping] = conn.output()
    assert (ping.name, ping["from"], ping["to"]) == ("iq", "example.org", "comp.example.org")
    assert ping.firstChildElement().uri == ns.PING
    world.clock.advance(30)
    conn.output()
    assert conn.view.stream_error() == "connection-timeout"


def test_the_ping_answer_keeps_the_component_and_is_not_routed():
    world = AcceptWorld(config=replace(ComponentListenerConfig(), keepalive_s=60, keepalive_timeout_s=30))
    conn = world.connect()
    conn.authenticate()
    world.clock.advance(60)
    [ping] = conn.output()
    conn.receive(f"<iq type='error' id='{ping['id']}' from='comp.example.org' to='example.org'>"
                 "<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    world.clock.advance(45)
    assert not conn.closed
    assert world.local.received == []


def test_an_active_component_is_not_pinged():
    world = AcceptWorld(config=replace(ComponentListenerConfig(), keepalive_s=60))
    conn = world.connect()
    conn.authenticate()
    for _ in range(5):
        world.clock.advance(40)
        conn.receive(" ")
    assert conn.output() == []


def test_several_components_are_routed_independently():
    world = AcceptWorld(domains=("a.example.org", "b.example.org"))
    a, b = world.connect(), world.connect()
    a.authenticate("a.example.org")
    b.authenticate("b.example.org")
    world.router.route(message("x@b.example.org", "alice@example.org/r"))
    assert a.output() == [] and len(b.output()) == 1
    # a may not send as b
    a.receive("<message from='x@b.example.org' to='alice@example.org'><body>x</body></message>")
    a.output()
    assert a.view.stream_error() == "invalid-from"
    assert world.router.destination("b.example.org") is b.stream


def test_the_stream_is_an_icomponent():
    from zope.interface.verify import verifyClass

    from tigasepy.interfaces import IComponent

    verifyClass(IComponent, ComponentAcceptStream)
    verifyClass(IComponent, UnavailableComponent)


# -- reconfiguration (config reload) -----------------------------------------------------------

def test_reconfigure_adds_removes_and_resets_only_what_changed():
    from tigasepy.components import ExternalComponentConfig

    world = AcceptWorld(domains=("keep.example.org", "drop.example.org", "rekey.example.org"))
    keep, drop, rekey = world.connect(), world.connect(), world.connect()
    keep.authenticate("keep.example.org")
    drop.authenticate("drop.example.org")
    rekey.authenticate("rekey.example.org")
    half = world.connect()
    half.open("drop.example.org")
    world.factory.reconfigure(replace(ComponentListenerConfig(), keepalive_s=0), [
        ExternalComponentConfig("keep", "keep.example.org", SECRET),
        ExternalComponentConfig("rekey", "rekey.example.org", "new-secret"),
        ExternalComponentConfig("new", "new.example.org", SECRET),
    ])
    for conn in (keep, drop, rekey, half):
        conn.output()
    assert not keep.closed and keep.view.stream_error() is None
    assert drop.view.stream_error() == "host-gone" and half.view.stream_error() == "host-gone"
    assert rekey.view.stream_error() == "reset"
    assert world.router.destination("keep.example.org") is keep.stream
    assert world.router.destination("drop.example.org") is None
    assert isinstance(world.router.destination("rekey.example.org"), UnavailableComponent)
    assert isinstance(world.router.destination("new.example.org"), UnavailableComponent)
    again = world.connect()
    again.authenticate("rekey.example.org", secret="new-secret")
    assert world.router.destination("rekey.example.org") is again.stream
    new = world.connect()
    new.authenticate("new.example.org")
    assert world.factory.is_connected("new.example.org")
    gone = world.connect()
    gone.open("drop.example.org")
    assert gone.view.stream_error() == "host-unknown"
