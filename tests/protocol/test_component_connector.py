"""The connecting side of XEP-0114 (tigasepy as the component) over StringTransports, alone and
piped into the accept side; the same component class in-process and over XEP-0114."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.words.xish import domish

from support.component_harness import SECRET, AcceptWorld, PipeEndpoint, StreamView
from tigasepy.components.connector import ComponentConnector, StreamRouter
from tigasepy.components.external import handshake_digest
from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import error_condition

from examples.echo_component import EchoComponent, EchoConfig


def make_connector(world: AcceptWorld, secret: str = SECRET, domain: str = "comp.example.org",
                   component: Any = None, **options: Any) -> tuple[ComponentConnector, PipeEndpoint]:
    endpoint = PipeEndpoint(world)
    component = component or EchoComponent(domain, EchoConfig(prefix="> "))
    options.setdefault("jitter", False)
    connector = ComponentConnector(component, endpoint, secret, world.clock, **options)
    return connector, endpoint


def message(to: str, frm: str, body: str) -> domish.Element:
    return parse_stanza(f"<message to='{to}' from='{frm}' type='chat'><body>{body}</body></message>")


# -- the client stream on its own ---------------------------------------------------------------

def test_client_stream_sends_the_header_and_the_handshake_for_the_server_stream_id():
    clock = Clock()
    connector = ComponentConnector(EchoComponent("comp.example.org", None), None, "pw", clock)
    from tigasepy.components.connector import _Factory

    stream = _Factory(connector).buildProtocol(None)
    transport = StringTransport()
    stream.makeConnection(transport)
    view = StreamView()
    view.parser.feed(transport.value())
    assert view.header["to"] == "comp.example.org" and view.header["xmlns"] == ns.COMPONENT
    transport.clear()
    stream.dataReceived(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
                        b"xmlns='jabber:component:accept' from='comp.example.org' id='3BF96D32'>")
    view.parser.feed(transport.value())
    [handshake] = view.elements
    assert str(handshake) == handshake_digest("3BF96D32", "pw")


def test_client_stream_refuses_a_server_speaking_another_namespace():
    clock = Clock()
    connector = ComponentConnector(EchoComponent("comp.example.org", None), None, "pw", clock)
    from tigasepy.components.connector import _Factory

    stream = _Factory(connector).buildProtocol(None)
    transport = StringTransport()
    stream.makeConnection(transport)
    stream.dataReceived(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
                        b"xmlns='jabber:client' id='x'>")
    assert b"invalid-namespace" in transport.value() and transport.disconnecting


def test_stream_router_sends_everything_up_the_stream():
    sent = []
    router = StreamRouter(sent.append)
    component = EchoComponent("comp.example.org", None)
    component.attach(router)
    assert router.routes == {"comp.example.org": component}
    component.receive(message("comp.example.org", "alice@example.org/a", "x"))
    [reply] = sent
    assert (reply["to"], reply["from"]) == ("alice@example.org/a", "comp.example.org")
    component.detach()
    assert router.routes == {}


# -- connector against the accept side -------------------------------------------------------

def test_connector_authenticates_and_the_component_answers_through_the_server():
    world = AcceptWorld()
    connector, endpoint = make_connector(world)
    connector.startService()
    assert connector.connected and world.factory.is_connected("comp.example.org")
    world.router.route(message("comp.example.org", "alice@example.org/a", "ping"))
    endpoint.pump()
    [echo] = world.local.take()
    assert (echo["from"], echo["to"], str(echo.body)) == ("comp.example.org", "alice@example.org/a", "> ping")


@pytest.mark.parametrize("mode", ["in-process", "xep-0114"])
def test_the_same_component_class_behaves_the_same_in_process_and_external(mode):
    """Location transparency: one EchoComponent class, attached to the router directly or
    run over XEP-0114; the user sees the same replies either way."""
    world = AcceptWorld(domains=("comp.example.org",) if mode == "xep-0114" else ())
    component = EchoComponent("comp.example.org", EchoConfig(prefix="> "))
    pump = lambda: None  # noqa: E731
    if mode == "in-process":
        component.attach(world.router)
    else:
        connector, endpoint = make_connector(world, component=component)
        connector.startService()
        pump = endpoint.pump
    world.router.route(message("comp.example.org", "alice@example.org/a", "hello"))
    world.router.route(parse_stanza("<iq type='get' id='v' to='comp.example.org' from='alice@example.org/a'>"
                                    "<query xmlns='jabber:iq:version'/></iq>"))
    world.router.route(parse_stanza("<iq type='get' id='u' to='comp.example.org' from='alice@example.org/a'>"
                                    "<query xmlns='urn:unknown'/></iq>"))
    pump()
    echo, version, unknown = world.local.take()
    assert (echo["from"], str(echo.body)) == ("comp.example.org", "> hello")
    assert (version["type"], version["id"], version["to"]) == ("result", "v", "alice@example.org/a")
    assert str(version.firstChildElement().name) == "query"
    assert error_condition(unknown) == "service-unavailable"


def test_a_wrong_secret_is_refused_and_retried_with_growing_delays():
    world = AcceptWorld()
    connector, endpoint = make_connector(world, secret="wrong", initial_delay_s=1, factor=2, max_delay_s=5)
    connector.startService()
    assert not connector.connected
    assert connector.last_refusal is not None and connector.last_refusal.condition == "not-authorized"
    delays = []
    for _ in range(5):
        before = endpoint.attempts
        waited = 0.0
        while endpoint.attempts == before:
            world.clock.advance(0.5)
            waited += 0.5
        delays.append(waited)
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_connection_refused_is_retried_and_success_resets_the_back_off():
    world = AcceptWorld()
    connector, endpoint = make_connector(world, initial_delay_s=1, factor=2)
    endpoint.refuse = 3
    connector.startService()
    assert not connector.connected
    world.clock.advance(1)
    world.clock.advance(2)
    assert not connector.connected
    world.clock.advance(4)
    assert connector.connected and connector.failures == 0
    endpoint.live.drop()
    assert not connector.connected
    world.clock.advance(1)
    assert connector.connected


def test_when_ready_fires_on_the_handshake():
    world = AcceptWorld()
    connector, endpoint = make_connector(world)
    endpoint.refuse = 1
    connector.startService()
    fired = []
    connector.when_ready().addCallback(fired.append)
    assert fired == []
    world.clock.advance(1)
    assert fired == [connector]


def test_stanzas_sent_while_disconnected_are_queued_and_flushed_on_reconnect():
    world = AcceptWorld()
    connector, endpoint = make_connector(world, max_queued=2)
    connector.startService()
    endpoint.live.drop()
    for n in range(3):
        connector.component.send(message("alice@example.org/a", "comp.example.org", f"queued {n}"))
    world.clock.advance(1)
    assert connector.connected
    endpoint.pump()
    assert [str(m.body) for m in world.local.take()] == ["queued 0", "queued 1"]


def test_a_server_side_conflict_is_retried():
    world = AcceptWorld()
    first, first_endpoint = make_connector(world)
    first.startService()
    second, second_endpoint = make_connector(world)
    second.startService()
    assert first.connected and not second.connected
    assert second.last_refusal.condition == "conflict"
    first_endpoint.live.drop()
    world.clock.advance(1)
    assert second.connected


def test_stop_closes_the_stream_detaches_and_does_not_retry():
    world = AcceptWorld()
    connector, endpoint = make_connector(world)
    connector.startService()
    d = connector.stopService()
    endpoint.pump()
    assert d.called
    assert not world.factory.is_connected("comp.example.org")
    assert connector.component.router is None
    attempts = endpoint.attempts
    world.clock.advance(120)
    assert endpoint.attempts == attempts


def test_the_client_handshake_times_out_against_a_silent_server():
    clock = Clock()

    class Silent:
        def __init__(self):
            self.transports = []

        def connect(self, factory):
            proto = factory.buildProtocol(None)
            transport = StringTransport()
            proto.makeConnection(transport)
            self.transports.append((proto, transport))
            return defer.succeed(proto)

    endpoint = Silent()
    connector = ComponentConnector(EchoComponent("comp.example.org", None), endpoint, "pw", clock,
                                   handshake_timeout_s=10, jitter=False)
    connector.startService()
    clock.advance(10)
    proto, transport = endpoint.transports[0]
    assert transport.disconnecting and b"connection-timeout" in transport.value()
    proto.connectionLost()
    clock.advance(1)
    assert len(endpoint.transports) == 2


def test_the_connector_sends_whitespace_keepalives():
    world = AcceptWorld()
    connector, endpoint = make_connector(world, keepalive_s=20)
    connector.startService()
    pipe = endpoint.live
    world.clock.advance(20)
    assert pipe.ct.value() == b" "
