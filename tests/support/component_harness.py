"""Drive XEP-0114 streams over StringTransports: the accept side (``ComponentAcceptStream``)
and the connecting side (``ComponentClientStream``), each read back parsed."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.components import ComponentListenerConfig, ExternalComponentConfig
from tigasepy.components.external import ComponentAcceptFactory, handshake_digest
from tigasepy.interfaces import IComponent
from tigasepy.router.router import Router
from tigasepy.stream.parser import StreamParser
from tigasepy.xmpp import namespaces as ns

SECRET = "s3cret-for-tests"
COMPONENT_HEADER = ("<stream:stream xmlns='jabber:component:accept' "
                    "xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'>")


@implementer(IComponent)
class Recorder:
    """A router destination that keeps what it receives (stands in for the SM)."""

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.received: list[domish.Element] = []

    def receive(self, stanza: domish.Element) -> None:
        self.received.append(stanza)

    def take(self) -> list[domish.Element]:
        out, self.received = self.received, []
        return out


class StreamView:
    """Parses one side's output of a jabber:component:accept stream."""

    def __init__(self) -> None:
        self.header: dict[str, str] | None = None
        self.elements: list[domish.Element] = []
        self.ended = False
        self.parser = StreamParser(self._start, self.elements.append, self._end, max_stanza_bytes=1 << 22)
        self.parser.content_namespace = ns.COMPONENT

    def _start(self, header: dict[str, str]) -> None:
        self.header = header

    def _end(self) -> None:
        self.ended = True

    def stream_error(self) -> str | None:
        for element in self.elements:
            if element.uri == ns.STREAMS and element.name == "error":
                for child in element.elements(ns.STREAM_ERRORS):
                    if child.name != "text":
                        return child.name
        return None


class AcceptWorld:
    """A router with ``example.org`` (recorded) and an accept factory for external components."""

    def __init__(self, domains: tuple[str, ...] = ("comp.example.org",), config: ComponentListenerConfig | None = None,
                 secret: str = SECRET) -> None:
        self.clock = Clock()
        self.router = Router()
        self.local = Recorder("example.org")
        self.router.add_route("example.org", self.local)
        self.config = config or ComponentListenerConfig()
        self.factory = ComponentAcceptFactory(
            self.config, [ExternalComponentConfig(d, d, secret) for d in domains], self.router, self.clock,
            "example.org")
        self.factory.attach()

    def connect(self) -> "AcceptConnection":
        return AcceptConnection(self)


class AcceptConnection:
    """One component connection to the accept factory."""

    def __init__(self, world: AcceptWorld) -> None:
        self.world = world
        self.stream = world.factory.buildProtocol(None)
        self.transport = StringTransport()
        self.stream.makeConnection(self.transport)
        self.view = StreamView()

    def receive(self, data: str) -> None:
        """The component sends ``data``."""
        self.stream.dataReceived(data.encode("utf-8"))

    def output(self) -> list[domish.Element]:
        """What the server wrote since the last call, parsed."""
        data = self.transport.value()
        self.transport.clear()
        before = len(self.view.elements)
        self.view.parser.feed(data)
        return self.view.elements[before:]

    def open(self, domain: str = "comp.example.org") -> str:
        """Send the header; returns the stream id the server answered with."""
        self.receive(COMPONENT_HEADER.format(domain=domain))
        self.output()
        assert self.view.header is not None
        return self.view.header.get("id", "")

    def authenticate(self, domain: str = "comp.example.org", secret: str = SECRET) -> list[domish.Element]:
        stream_id = self.open(domain)
        self.receive(f"<handshake>{handshake_digest(stream_id, secret)}</handshake>")
        return self.output()

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting


class Pipe:
    """Two protocols joined by StringTransports; ``pump`` moves bytes until both are quiet."""

    def __init__(self, client: Any, server: Any) -> None:
        self.client, self.server = client, server
        self.ct, self.st = StringTransport(), StringTransport()
        self.lost = False
        server.makeConnection(self.st)
        client.makeConnection(self.ct)

    def pump(self) -> None:
        for _ in range(100):
            moved = False
            for src, dst in ((self.ct, self.server), (self.st, self.client)):
                data = src.value()
                if data:
                    src.clear()
                    dst.dataReceived(data)
                    moved = True
            if not moved:
                break
        if not self.lost and (self.ct.disconnecting or self.st.disconnecting):
            self.drop()

    def drop(self) -> None:
        """The TCP connection ends (both sides see connectionLost)."""
        if self.lost:
            return
        self.lost = True
        self.server.connectionLost()
        self.client.connectionLost()


class PipeEndpoint:
    """A client endpoint whose connections go into an ``AcceptWorld``'s factory."""

    def __init__(self, world: AcceptWorld) -> None:
        self.world = world
        self.pipes: list[Pipe] = []
        self.refuse = 0
        self.attempts = 0

    def connect(self, factory: Any) -> defer.Deferred:
        self.attempts += 1
        if self.refuse:
            self.refuse -= 1
            return defer.fail(ConnectionRefusedError())
        client = factory.buildProtocol(None)
        pipe = Pipe(client, self.world.factory.buildProtocol(None))
        self.pipes.append(pipe)
        pipe.pump()
        return defer.succeed(client)

    def pump(self) -> None:
        for pipe in self.pipes:
            if not pipe.lost:
                pipe.pump()

    @property
    def live(self) -> Pipe:
        [pipe] = [p for p in self.pipes if not p.lost]
        return pipe
