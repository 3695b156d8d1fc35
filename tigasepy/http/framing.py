"""Client streams over message transports (RFC 7395 WebSocket, XEP-0206 BOSH).

The negotiation logic (SASL, bind, XEP-0198, CSI, stamping) stays in
``tigasepy.c2s.protocol.ClientStream``. A ``FramedClientStream`` is that class with
two differences: its stream header goes out as RFC 7395 ``<open/>``, and it writes to a
``MessageTransport`` instead of a TCP transport. The transport turns each write (one
top-level element: ClientStream writes one per call) into a message for the carrier:

- ``</stream:stream>`` becomes ``close()``;
- ``<stream:features/>`` and ``<stream:error/>`` get the ``stream`` prefix declared;
- a stanza without ``xmlns`` gets ``xmlns='jabber:client'`` (each message is a whole
  XML document of its own, RFC 7395 section 3.3.3).

Inbound, ``frame_received`` translates ``<open/>`` into a stream header and ``<close/>``
into the end of the stream before feeding ClientStream's bounded parser.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable
from xml.parsers import expat

from twisted.internet import protocol
from twisted.python.failure import Failure

from tigasepy.c2s.protocol import ClientStream
from tigasepy.xmpp import namespaces as ns

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
_STREAM_DECL = b" xmlns:stream='http://etherx.jabber.org/streams'"
_CLIENT_DECL = b" xmlns='jabber:client'"
_END = b"</stream:stream>"


class FramingError(Exception):
    """A message that is not a well-formed ``<open/>`` / ``<close/>`` frame."""


def parse_frame_element(text: str) -> tuple[str, str, dict[str, str]]:
    """(namespace, name, attributes) of a one-element document such as ``<open .../>``.

    No DTDs or entities (expat with them refused); attributes with a namespace are
    keyed ``"ns local"`` (``xml:lang`` becomes ``"http://www.w3.org/XML/1998/namespace lang"``).
    """
    result: list[tuple[str, str, dict[str, str]]] = []
    parser = expat.ParserCreate("UTF-8", " ")

    def start(name: str, attrs: dict[str, str]) -> None:
        if not result:
            uri, _, local = name.rpartition(" ")
            result.append((uri, local, dict(attrs)))

    def refuse(*_: Any) -> None:
        raise FramingError("DTDs are not allowed")

    parser.StartElementHandler = start
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    try:
        parser.Parse(text.encode("utf-8"), True)
    except expat.ExpatError as e:
        raise FramingError(str(e)) from None
    if not result:
        raise FramingError("no element")
    return result[0]


def _quote(value: str) -> str:
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;")
            .replace('"', "&quot;"))


def fix_element(data: bytes) -> bytes:
    """Make one serialized top-level element a standalone document (see module doc)."""
    if data.startswith(b"<stream:"):
        end = data.find(b">")
        if b"xmlns:stream=" in data[:end]:
            return data
        space = data.find(b" ")
        cut = end if space == -1 or (end != -1 and end < space) else space
        if data[cut - 1:cut] == b"/":
            cut -= 1
        return data[:cut] + _STREAM_DECL + data[cut:]
    if data.startswith((b"<message", b"<presence", b"<iq")):
        end = data.find(b">")
        if end != -1 and b"xmlns=" not in data[:end]:
            cut = end
            if data[cut - 1:cut] == b"/":
                cut -= 1
            name_end = min(i for i in (data.find(b" "), cut) if i != -1)
            return data[:name_end] + _CLIENT_DECL + data[name_end:]
    return data


class MessageSink:
    """What a carrier (a WebSocket connection, a BOSH session) does with the stream's output."""

    def send_open(self, stream_id: str, domain: str) -> None:
        """The stream (re)started: ``<open/>`` for WebSocket; BOSH notes the id."""

    def send_element(self, data: bytes) -> None:
        """One top-level element, a standalone XML document."""

    def send_close(self) -> None:
        """The server ends the stream (after any error element)."""

    def drop(self, abort: bool) -> None:
        """Close the carrier."""

    def peer(self) -> Any:
        """The peer's address (``IAddress``) or None."""


class MessageTransport:
    """The ``ITransport`` face ClientStream writes to, over a ``MessageSink``."""

    disconnecting = False

    def __init__(self, sink: MessageSink) -> None:
        self.sink = sink

    def write(self, data: bytes) -> None:
        if self.disconnecting:
            return
        if data.endswith(_END):
            rest = data[:-len(_END)]
            if rest:
                self.sink.send_element(fix_element(rest))
            self.sink.send_close()
            return
        self.sink.send_element(fix_element(data))

    def writeSequence(self, data: list[bytes]) -> None:
        for chunk in data:
            self.write(chunk)

    def loseConnection(self) -> None:
        if not self.disconnecting:
            self.disconnecting = True
            self.sink.drop(False)

    def abortConnection(self) -> None:
        self.disconnecting = True
        self.sink.drop(True)

    def getPeer(self) -> Any:
        return self.sink.peer()

    def getHost(self) -> Any:
        return None

    def startTLS(self, context: Any) -> None:   # never offered: TLS is the HTTP layer's
        raise RuntimeError("no STARTTLS over a framed transport")


class FramedClientStream(ClientStream):
    """A ClientStream whose header is ``<open/>``, fed with whole messages."""

    def _send_header(self) -> None:
        self.stream_id = secrets.token_urlsafe(12)
        domain = self.domain or self.factory.default_domain
        transport: Any = self.transport
        transport.sink.send_open(self.stream_id, domain)
        self._header_sent = True

    def open_received(self, attrs: dict[str, str]) -> None:
        """A (re)started stream: translated into a classic header for the parser."""
        parts = [f"<stream:stream xmlns='{ns.CLIENT}' xmlns:stream='{ns.STREAMS}'"]
        for key in ("to", "version", "from"):
            if key in attrs:
                parts.append(f" {key}='{_quote(attrs[key])}'")
        lang = attrs.get("http://www.w3.org/XML/1998/namespace lang")
        if lang:
            parts.append(f" xml:lang='{_quote(lang)}'")
        parts.append(">")
        self.dataReceived("".join(parts).encode("utf-8"))

    def frame_received(self, text: str) -> None:
        """One RFC 7395 message: ``<open/>``, ``<close/>`` or a top-level element."""
        if self.state == "closed":
            return
        stripped = text.lstrip()
        if stripped.startswith(("<open", "<close")):
            try:
                uri, name, attrs = parse_frame_element(stripped)
            except FramingError:
                self.close("bad-format", "Not a well-formed framing element")
                return
            if uri != FRAMING or name not in ("open", "close"):
                self.close("invalid-namespace", "Framing elements are in " + FRAMING)
                return
            if name == "open":
                self.open_received(attrs)
            else:
                self.dataReceived(_END)
            return
        if stripped.startswith("<stream:stream") or stripped.startswith("<?xml"):
            self.close("invalid-namespace", "Use <open/> in " + FRAMING)
            return
        self.dataReceived(text.encode("utf-8"))


def attach(stream: FramedClientStream, sink: MessageSink) -> MessageTransport:
    """Connect ``stream`` to ``sink`` (``connectionMade`` runs: timers, accounting)."""
    transport = MessageTransport(sink)
    stream.makeConnection(transport)
    return transport


def detach(stream: FramedClientStream, reason: Failure | None = None) -> None:
    """The carrier is gone: the stream's ``connectionLost`` (a bound session may resume)."""
    stream.connectionLost(reason or Failure(protocol.connectionDone))


StreamBuilder = Callable[[bool], FramedClientStream]
