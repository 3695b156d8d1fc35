"""Drive a ``ClientStream`` over a ``StringTransport`` and read back what it wrote, parsed."""

from __future__ import annotations

import base64
import copy
from dataclasses import replace
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.c2s.factory import ClientStreamFactory
from tigasepy.config import C2SConfig
from tigasepy.interfaces import (
    ChannelBinding, IAuthenticationService, ISaslExchange, SaslContext, SaslFailure, SaslSuccess,
)
from tigasepy.stream.parser import StreamParser
from tigasepy.xmpp import namespaces as ns

HEADER = ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
          "to='example.org' version='1.0'>")


@implementer(ISaslExchange)
class PlainExchange:
    """PLAIN against a fixed user table."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = users

    def step(self, response: bytes | None) -> Any:
        try:
            _authz, user, password = (response or b"").decode().split("\0")
        except ValueError:
            return defer.fail(SaslFailure("malformed-request"))
        if self._users.get(user) != password:
            return defer.fail(SaslFailure("not-authorized"))
        return defer.succeed(SaslSuccess(user))


@implementer(IAuthenticationService)
class FakeAuth:
    """Offers PLAIN; records the contexts it was asked about."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.contexts: list[SaslContext] = []

    def mechanisms(self, context: SaslContext) -> list[str]:
        self.contexts.append(context)
        return ["PLAIN"]

    def start(self, mechanism: str, context: SaslContext) -> PlainExchange:
        if mechanism != "PLAIN":
            raise SaslFailure("invalid-mechanism")
        return PlainExchange(self.users)


class TLSStringTransport(StringTransport):
    """A StringTransport that records STARTTLS instead of doing it."""

    tls_context: Any = None

    def startTLS(self, context: Any) -> None:
        self.tls_context = context


class ClientView:
    """Parses everything the server wrote, as a client would."""

    def __init__(self) -> None:
        self.header: dict[str, str] | None = None
        self.elements: list[domish.Element] = []
        self.ended = False
        self._reset()

    def _reset(self) -> None:
        self.parser = StreamParser(self._start, self.elements.append, self._end, max_stanza_bytes=1 << 22)
        self.parser.content_namespace = ns.CLIENT

    def _start(self, header: dict[str, str]) -> None:
        self.header = header

    def _end(self) -> None:
        self.ended = True

    def feed(self, data: bytes) -> None:
        self.parser.feed(data)

    def restart(self) -> None:
        """The stream restarts (after TLS or SASL): a new header follows."""
        self._reset()


class C2SHarness:
    """One client stream on a StringTransport, with a clock and a real SM behind it."""

    def __init__(self, sm: Any, config: C2SConfig | None = None, tls_context: Any = None,
                 users: dict[str, str] | None = None, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.config = config or replace(C2SConfig(), tls_required=False)
        self.auth = FakeAuth(users or {"alice": "secret", "bob": "secret"})
        self.factory = ClientStreamFactory(self.config, sm, self.auth, self.clock, tls_context,
                                           lambda transport: ChannelBinding({}), "example.org")
        self.view = ClientView()
        self.stream = self.open()

    def open(self) -> Any:
        """Open a new connection on this factory and return its protocol."""
        stream = self.factory.buildProtocol(None)
        self.transport = TLSStringTransport()
        stream.makeConnection(self.transport)
        return stream

    def another_connection(self) -> "C2SHarness":
        """A second client connection on the same factory (same clock, users and SM)."""
        other = copy.copy(self)
        other.view = ClientView()
        other.stream = other.open()
        return other

    def receive(self, data: str | bytes) -> None:
        """The client sends ``data``."""
        self.stream.dataReceived(data.encode() if isinstance(data, str) else data)

    def output(self) -> list[domish.Element]:
        """Parse what the server wrote since the last call; returns the new elements."""
        data = self.transport.value()
        self.transport.clear()
        before = len(self.view.elements)
        self.view.feed(data)
        return self.view.elements[before:]

    def stream_error(self) -> str | None:
        """The stream error condition the server sent, if any."""
        for element in self.view.elements:
            if element.uri == ns.STREAMS and element.name == "error":
                for child in element.elements(ns.STREAM_ERRORS):
                    if child.name != "text":
                        return child.name
        return None

    def login(self, user: str = "alice", password: str = "secret", resource: str | None = "home") -> str:
        """Negotiate up to a bound resource without TLS; returns the bound full JID."""
        self.receive(HEADER)
        self.output()
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.receive(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{token}</auth>")
        [success] = self.output()
        assert success.name == "success", success.toXml()
        self.view.restart()
        self.receive(HEADER)
        self.output()
        body = f"<resource>{resource}</resource>" if resource else ""
        self.receive(f"<iq type='set' id='bind1'><bind xmlns='{ns.BIND}'>{body}</bind></iq>")
        [result] = self.output()
        assert result["type"] == "result", result.toXml()
        return str(next(result.elements(ns.BIND, "bind")).jid)
