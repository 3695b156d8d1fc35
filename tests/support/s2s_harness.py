"""Drive server-to-server streams over ``StringTransport``s with a fake clock, router and TLS.

- ``S2SHarness``: an ``S2SService`` for ``a.example`` whose outgoing connections are
  recorded (``attempts``) instead of made, and whose TLS layer is a stand-in: STARTTLS is
  recorded on the transport, and the peer's certificate is "valid" for the domains in
  ``valid_peers``.
- ``Peer``: one connection as the remote server sees it: ``send`` bytes in, ``read`` the
  elements our side wrote (stream restarts handled), ``error`` for a stream error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.config import S2SConfig
from tigasepy.interfaces import IRouter
from tigasepy.s2s.factory import IncomingServerFactory
from tigasepy.s2s.resolver import Resolver, Target
from tigasepy.s2s.service import S2SService
from tigasepy.stream.parser import StreamParser
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.jid import domain_of

LOCAL = "a.example"
REMOTE = "b.example"
SECRET = b"harness-dialback-secret"
DB = "jabber:server:dialback"


def header(sender: str | None = REMOTE, to: str | None = LOCAL, version: str = "1.0",
           stream_id: str | None = None) -> str:
    """A peer's stream header."""
    attrs = ""
    if sender:
        attrs += f" from='{sender}'"
    if to:
        attrs += f" to='{to}'"
    if stream_id:
        attrs += f" id='{stream_id}'"
    if version:
        attrs += f" version='{version}'"
    return (f"<stream:stream xmlns='jabber:server' xmlns:stream='{ns.STREAMS}' xmlns:db='{DB}'{attrs}>")


@implementer(IRouter)
class FakeRouter:
    """Routes stanzas into ``routed``; records bounces as (stanza, condition) in ``bounced``."""

    def __init__(self, served: tuple[str, ...] = (LOCAL, "muc.a.example")) -> None:
        self.served = set(served)
        self.routed: list[domish.Element] = []
        self.bounced: list[tuple[domish.Element, str]] = []
        self.default: Any = None

    def serves(self, domain: str) -> bool:
        return domain.lower() in self.served

    def route(self, stanza: domish.Element) -> None:
        if domain_of(stanza.getAttribute("to", "")).lower() in self.served:
            self.routed.append(stanza)
        elif self.default is not None:
            self.default.receive(stanza)

    def bounce(self, stanza: domish.Element, condition: str) -> None:
        StanzaError(condition)          # the condition must exist
        self.bounced.append((stanza, condition))

    def add_route(self, domain: str, destination: Any) -> None:
        self.served.add(domain)

    def remove_route(self, domain: str) -> None:
        self.served.discard(domain)


class TLSStringTransport(StringTransport):
    """Records STARTTLS instead of doing it."""

    tls: Any = None

    def startTLS(self, context: Any) -> None:
        self.tls = context


@dataclass
class FakePeerCertificate:
    """A stand-in for ``PeerCertificate``: valid for the domains given."""

    valid: frozenset[str]

    def valid_for(self, domain: str) -> bool:
        return domain in self.valid

    def problem(self, domain: str) -> str:
        return "valid" if domain in self.valid else "self-signed certificate"


class FakeTLS:
    """The ``S2STLS`` interface without OpenSSL."""

    def __init__(self) -> None:
        self.server = "server-context"
        self.valid_peers: set[str] = set()

    def client(self, server_name: str, direct_tls: bool = False, local: str = "") -> Any:
        return ("client-context", server_name, direct_tls)

    def peer(self, transport: Any) -> FakePeerCertificate:
        return FakePeerCertificate(frozenset(self.valid_peers))


class PeerView:
    """What our side wrote, parsed as the peer would (a new header restarts the parse)."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.elements: list[domish.Element] = []
        self.ended = False
        self._parser: StreamParser | None = None

    def feed(self, data: bytes) -> None:
        marker = b"<?xml version='1.0'?>"
        chunks = data.split(marker)
        for index, chunk in enumerate(chunks):
            if index > 0:
                self._parser = StreamParser(self.headers.append, self.elements.append, self._end,
                                            max_stanza_bytes=1 << 22)
                self._parser.content_namespace = ns.SERVER
            if chunk and self._parser is not None:
                self._parser.feed(chunk)

    def _end(self) -> None:
        self.ended = True


class Peer:
    """One connection of one of our streams, seen from the remote server."""

    def __init__(self, stream: Any, transport: TLSStringTransport) -> None:
        self.stream = stream
        self.transport = transport
        self.view = PeerView()

    def send(self, data: str | bytes) -> None:
        """The peer writes ``data``."""
        self.stream.dataReceived(data.encode() if isinstance(data, str) else data)

    def read(self) -> list[domish.Element]:
        """The elements our side wrote since the last call."""
        data = self.transport.value()
        self.transport.clear()
        before = len(self.view.elements)
        self.view.feed(data)
        return self.view.elements[before:]

    @property
    def header(self) -> dict[str, str]:
        """The last stream header our side sent."""
        self.read_pending()
        return self.view.headers[-1]

    def read_pending(self) -> None:
        """Parse what is waiting without returning it (the elements stay readable via ``view``)."""
        data = self.transport.value()
        if data:
            self.transport.clear()
            self.view.feed(data)

    def error(self) -> str | None:
        """The stream error condition our side sent, if any."""
        self.read_pending()
        for element in self.view.elements:
            if element.uri == ns.STREAMS and element.name == "error":
                for child in element.elements(ns.STREAM_ERRORS):
                    if child.name != "text":
                        return child.name
        return None

    @property
    def disconnecting(self) -> bool:
        """True once our side dropped (or is dropping) the connection."""
        return self.transport.disconnecting

    def lose(self) -> None:
        """The TCP connection breaks."""
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        self.stream.connectionLost(Failure(ConnectionLost()))


@dataclass
class Attempt:
    """One outgoing connection the service asked for."""

    remote: str
    target: Target
    factory: Any
    deferred: defer.Deferred = field(default_factory=defer.Deferred)

    def connect(self) -> Peer:
        """The TCP connection succeeds: returns the peer's view of it."""
        stream = self.factory.buildProtocol(None)
        transport = TLSStringTransport()
        stream.makeConnection(transport)
        self.deferred.callback(stream)
        return Peer(stream, transport)

    def refuse(self, error: Exception | None = None) -> None:
        """The TCP connection fails."""
        from twisted.internet.error import ConnectionRefusedError

        self.deferred.errback(error or ConnectionRefusedError())


class S2SHarness:
    """An ``S2SService`` for a.example (and muc.a.example) on a fake clock and router."""

    def __init__(self, routes: dict[str, tuple[tuple[str, int, bool], ...]] | None = None, **config: Any) -> None:
        self.clock = Clock()
        self.config = dataclasses.replace(S2SConfig(), **config)
        self.config.validate(("s2s",))
        self.router = FakeRouter()
        self.tls = FakeTLS()
        self.attempts: list[Attempt] = []
        static = routes if routes is not None else {REMOTE: (("127.0.0.1", 5269, False),),
                                                    "c.example": (("127.0.0.2", 5269, False),
                                                                  ("127.0.0.3", 5270, True))}
        self.resolver = Resolver(static, use_dns=False)
        self.service = S2SService(self.config, self.router, self.clock, SECRET, self.tls, self.resolver,
                                  default_domain=LOCAL, connect=self._connect)
        self.router.default = self.service
        self.service.startService()

    def _connect(self, local: str, remote: str, target: Target, factory: Any) -> defer.Deferred:
        attempt = Attempt(remote, target, factory)
        attempt.deferred = defer.Deferred(lambda d: None)   # cancellable, like an endpoint's
        self.attempts.append(attempt)
        return attempt.deferred

    def incoming(self, direct_tls: bool = False, host: str = "192.0.2.1") -> Peer:
        """A new incoming connection from ``host``."""
        stream = IncomingServerFactory(self.service, direct_tls=direct_tls).buildProtocol(None)
        transport = TLSStringTransport(peerAddress=_address(host))
        stream.makeConnection(transport)
        return Peer(stream, transport)

    def key(self, receiving: str, originating: str, stream_id: str) -> str:
        """Our dialback key (we are originating/authoritative for a.example)."""
        return self.service.dialback_key(receiving, originating, stream_id)


def _address(host: str) -> Any:
    from twisted.internet.address import IPv4Address

    return IPv4Address("TCP", host, 40000)


def stanza(kind: str = "message", sender: str = f"alice@{LOCAL}/home", to: str = f"bob@{REMOTE}",
           body: str = "hi", **attrs: str) -> domish.Element:
    """A namespace-neutral stanza as the SM hands it to the router."""
    element = domish.Element((None, kind))
    element["from"] = sender
    element["to"] = to
    for key, value in attrs.items():
        element[key] = value
    if kind == "message":
        element.addElement("body", content=body)
    return element
