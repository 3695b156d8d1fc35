"""XEP-0124/0206 session mechanics on a Clock with DummyRequests (no sockets)."""

from __future__ import annotations

import base64
import io
from dataclasses import replace

import pytest
from twisted.web.test.requesthelper import DummyRequest

from tests.support.c2s_harness import FakeAuth
from tests.support.sm_harness import SMHarness
from tigasepy.c2s.factory import ClientStreamFactory
from tigasepy.config import C2SConfig, HttpConfig
from tigasepy.extensions.ping import Ping
from tigasepy.http.bosh import NS_BOSH, BoshResource
from tigasepy.http.framing import FramedClientStream
from tigasepy.storage.interfaces import IAccountStore
from tigasepy.storage.memory import MemoryAccountStore
from tigasepy.stream.parser import parse_stanza


class World:
    def __init__(self, **http: object) -> None:
        harness = SMHarness([(Ping, None)], {IAccountStore: MemoryAccountStore()})
        self.clock = harness.clock
        self.factory = ClientStreamFactory(replace(C2SConfig(), tls_required=False), harness.sm,
                                           FakeAuth({"alice": "secret"}), self.clock, None,
                                           lambda transport: None, "example.org")
        self.resource = BoshResource(replace(HttpConfig(), **http), self._stream, lambda r: True,
                                     lambda r: True, self.clock)
        self.sid = ""
        self.rid = 100

    def _stream(self, secure: bool) -> FramedClientStream:
        return FramedClientStream(self.factory, direct_tls=secure)

    def post(self, inner: str = "", rid: int | None = None, **attrs: str) -> DummyRequest:
        if rid is None:
            self.rid += 1
            rid = self.rid
        extra = "".join(f" {k.replace('_', ':')}='{v}'" for k, v in attrs.items())
        sid = f" sid='{self.sid}'" if self.sid else ""
        body = (f"<body xmlns='{NS_BOSH}' xmlns:xmpp='urn:xmpp:xbosh' rid='{rid}'{sid}{extra}>"
                f"{inner}</body>")
        request = DummyRequest([b""])
        request.method = b"POST"
        request.content = io.BytesIO(body.encode())
        result = self.resource.render_POST(request)
        if isinstance(result, bytes):
            request.write(result)
            request.finish()
        return request

    def create(self) -> DummyRequest:
        request = self.post(to="example.org", wait="10", hold="1", ver="1.11", xmpp_version="1.0")
        self.sid = parse(request).getAttribute("sid")
        return request

    def login(self) -> None:
        self.create()
        auth = base64.b64encode(b"\0alice\0secret").decode()
        request = self.post(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>")
        self.clock.advance(0)
        assert b"<success" in b"".join(request.written)
        request = self.post(xmpp_restart="true")
        self.clock.advance(0)
        request = self.post("<iq xmlns='jabber:client' type='set' id='b'><bind xmlns="
                            "'urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        self.clock.advance(0)
        assert b"<jid>alice@example.org/" in b"".join(request.written)


def parse(request: DummyRequest):
    return parse_stanza(b"".join(request.written), content_namespace=NS_BOSH)


@pytest.fixture
def world() -> World:
    return World()


def test_creation_answers_with_the_session_attributes_and_features(world: World) -> None:
    body = parse(world.create())
    assert body.getAttribute("sid") and body.getAttribute("requests") == "2"
    assert body.getAttribute("wait") == "10" and body.getAttribute("hold") == "1"
    assert body.getAttribute("authid") and body.getAttribute("inactivity") == "60"
    assert body.getAttribute(("urn:xmpp:xbosh", "version")) == "1.0"
    assert "PLAIN" in body.toXml()


def test_wait_expires_with_an_empty_body_and_hold_answers_the_oldest(world: World) -> None:
    world.login()
    first = world.post()
    assert not first.written
    second = world.post()
    assert first.finished and parse(first).toXml().endswith("/>")     # beyond hold=1
    world.clock.advance(10)
    assert second.finished and not list(parse(second).elements())


def test_output_goes_to_the_held_request(world: World) -> None:
    world.login()
    held = world.post()
    sender = world.post("<iq xmlns='jabber:client' type='get' id='p' to='example.org'>"
                        "<ping xmlns='urn:xmpp:ping'/></iq>")
    assert held.finished and not list(parse(held).elements())           # pushed out: hold=1
    world.clock.advance(0)
    assert sender.finished and b"id='p'" in b"".join(sender.written)


def test_rid_window_repeats_and_reordering(world: World) -> None:
    world.login()
    rid = world.rid
    again = world.post(rid=rid)
    assert again.finished and b"<jid>" in b"".join(again.written)      # the cached answer
    later = world.post(rid=rid + 2)
    assert not later.finished
    world.post(rid=rid + 1)                                              # fills the gap
    world.rid = rid + 2
    world.clock.advance(10)
    assert later.finished
    far = world.post(rid=rid + 50)
    assert parse(far).getAttribute("condition") == "item-not-found"
    assert world.sid not in world.resource.sessions


def test_overactivity_and_inactivity(world: World) -> None:
    world.login()
    rid = world.rid
    world.post()                      # held
    world.post(rid=rid + 3)           # waits for rid + 2: two requests open (hold + 1)
    third = world.post(rid=rid + 2)    # a third open request
    assert parse(third).getAttribute("condition") == "policy-violation"
    assert not world.resource.sessions
    other = World(bosh_inactivity_s=5)
    other.login()
    assert other.resource.sessions
    other.clock.advance(6)
    assert not other.resource.sessions


def test_terminate(world: World) -> None:
    world.login()
    request = world.post("<presence xmlns='jabber:client' type='unavailable'/>", type="terminate")
    world.clock.advance(0)
    assert parse(request).getAttribute("type") == "terminate"
    assert not world.resource.sessions
    assert not world.factory.connections
