"""RFC 7395: XMPP over WebSocket (subprotocol ``xmpp``), on ``twisted.web.websocket``.

Each connection is a ``FramedClientStream`` (the c2s negotiation: SASL, bind,
XEP-0198, CSI) writing through a ``MessageTransport`` to this WebSocket. Text messages
only, one element each; a message larger than ``websocket_max_frame_bytes`` ends the
stream (``policy-violation``). A WebSocket ping every ``websocket_ping_s`` keeps
proxies from dropping an idle connection; ClientStream's own idle timeout still applies.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tigasepy.http.framing import FRAMING, FramedClientStream, MessageSink, attach, detach
from tigasepy.log_level import Logger

try:   # Twisted >= 25.5 with its "websocket" extra (wsproto)
    from twisted.web import _websocket_impl as _ws
    from wsproto import ConnectionType
    from wsproto.events import AcceptConnection
    from wsproto.handshake import H11Handshake
    from wsproto.utilities import RemoteProtocolError
except ImportError:   # pragma: no cover
    _ws = None  # type: ignore[assignment]

SUBPROTOCOL = "xmpp"


class XmppWebSocket(MessageSink):
    """One WebSocket connection carrying one client stream (twisted's ``WebSocketProtocol``)."""

    _log = Logger()

    def __init__(self, stream: FramedClientStream, max_frame: int, ping_s: int, clock: Any,
                 peer: Any) -> None:
        self.stream = stream
        self.max_frame = max_frame
        self.ping_s = ping_s
        self.clock = clock
        self._peer = peer
        self.ws: Any = None
        self._ping: Any = None
        self._closed = False

    # -- WebSocketProtocol ------------------------------------------------------------------
    def negotiationStarted(self, transport: Any) -> None:
        self.ws = transport

    def negotiationFinished(self) -> None:
        attach(self.stream, self)
        self._schedule_ping()

    def textMessageReceived(self, message: str) -> None:
        if len(message) > self.max_frame:
            self.stream.close("policy-violation", "Message too large")
            return
        self.stream.frame_received(message)

    def bytesMessageReceived(self, data: bytes) -> None:
        self.stream.close("bad-format", "XMPP over WebSocket uses text messages")

    def pongReceived(self, payload: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self._closed = True
        if self._ping is not None and self._ping.active():
            self._ping.cancel()
        self._ping = None
        if self.stream.transport is not None:
            detach(self.stream, reason)

    def _schedule_ping(self) -> None:
        if self.ping_s and not self._closed:
            self._ping = self.clock.callLater(self.ping_s, self._send_ping)

    def _send_ping(self) -> None:
        self._ping = None
        if not self._closed:
            self.ws.ping(b"tigasepy")
            self._schedule_ping()

    # -- MessageSink ---------------------------------------------------------------------
    def send_open(self, stream_id: str, domain: str) -> None:
        if not self._closed:
            self.ws.sendTextMessage(f"<open xmlns='{FRAMING}' id='{stream_id}' from='{domain}' "
                                    "version='1.0' xml:lang='en'/>")

    def send_element(self, data: bytes) -> None:
        if not self._closed:
            self.ws.sendTextMessage(data.decode("utf-8"))

    def send_close(self) -> None:
        if not self._closed:
            self.ws.sendTextMessage(f"<close xmlns='{FRAMING}'/>")

    def drop(self, abort: bool) -> None:
        if self._closed:
            return
        self._closed = True
        if abort:
            self.ws.transport.abortConnection()
        else:
            self.ws.loseConnection(1000)

    def peer(self) -> Any:
        return self._peer


def _bounded_wire(connection: Any, ws: XmppWebSocket, limit: int) -> Any:
    """Twisted's wire protocol, whose message reassembly buffers stop at ``limit``.

    twisted.web's WebSocket code joins the fragments of a message without a bound;
    after each read, a message already longer than ``limit`` ends the connection.
    """
    wire: Any = _ws._WebSocketWireProtocol(connection, _ws.serverBootstrap, ws)  # type: ignore[type-var]
    receive = wire.dataReceived

    def data_received(data: bytes) -> None:
        receive(data)
        if len(wire._textBuffer.data) + len(wire._bytesBuffer.data) > limit:
            ws.stream.close("policy-violation", "Message too large")
            wire._textBuffer.done()
            wire._bytesBuffer.done()

    wire.dataReceived = data_received
    return wire


class XmppWebSocketResource(Resource):
    """The RFC 7395 endpoint: upgrades a GET offering the ``xmpp`` subprotocol.

    ``make_stream(secure)`` builds the ``FramedClientStream`` of a new connection;
    ``allowed(request)`` may refuse a request (plain HTTP when TLS is required).
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, make_stream: Callable[[bool], FramedClientStream], allowed: Callable[[Any], bool],
                 secure: Callable[[Any], bool], max_frame: int, ping_s: int, clock: Any) -> None:
        super().__init__()
        self.make_stream = make_stream
        self.allowed = allowed
        self.secure = secure
        self.max_frame = max_frame
        self.ping_s = ping_s
        self.clock = clock

    def render_GET(self, request: Any) -> Any:
        if _ws is None:   # pragma: no cover
            request.setResponseCode(501)
            return b"WebSocket support needs wsproto (twisted[websocket])\n"
        if not self.allowed(request):
            request.setResponseCode(403)
            request.setHeader(b"content-type", b"text/plain")
            return b"XMPP over WebSocket needs TLS here: use wss://\n"
        offered: list[str] = []
        for value in request.requestHeaders.getRawHeaders(b"sec-websocket-protocol", []):
            offered.extend(p.strip() for p in value.decode("latin-1").split(","))
        if SUBPROTOCOL not in offered:
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"text/plain")
            return b"RFC 7395: the WebSocket subprotocol 'xmpp' is required\n"
        handshake = H11Handshake(ConnectionType.SERVER)
        raw = request.requestHeaders.getAllRawHeaders()
        headers = [(key, value) for key, values in raw for value in values]
        try:
            handshake.initiate_upgrade_connection(headers, request.path)
        except RemoteProtocolError:
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"text/plain")
            return b"WebSocket negotiation error\n"
        transport = request.channel.transport
        stream = self.make_stream(self.secure(request))
        ws = XmppWebSocket(stream, self.max_frame, self.ping_s, self.clock, transport.getPeer())
        to_send = handshake.send(AcceptConnection(subprotocol=SUBPROTOCOL))
        wire = _bounded_wire(handshake.connection, ws, self.max_frame)
        request.channel._protocolUpgradeForWebsockets(wire)
        transport.write(to_send)
        ws.negotiationFinished()
        return NOT_DONE_YET
