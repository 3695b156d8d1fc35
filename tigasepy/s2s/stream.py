"""What incoming and outgoing server-to-server streams share (RFC 6120 section 4).

Bytes go through the bounded ``StreamParser`` (content namespace ``jabber:server``);
stanzas are written with ``to_xml``. No exception escapes ``dataReceived``: bad input
becomes a stream error and the end of this stream only. A stream with no traffic for
``[s2s] idle_timeout_s`` is closed; closing sends ``</stream:stream>`` and waits a
little for the peer's own closing tag, processing what still arrives (RFC 6120 4.4),
so that nothing the peer sent in the meantime is lost.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from twisted.internet import protocol
from twisted.python.failure import Failure
from twisted.words.xish import domish

from tigasepy.log_level import Logger
from tigasepy.s2s.dialback import NS_DIALBACK
from tigasepy.stream.parser import StreamParseError, StreamParser
from tigasepy.stream.tcp import disable_nagle
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import stream_error
from tigasepy.xmpp.jid import domain_of
from tigasepy.xmpp.serialize import to_xml

if TYPE_CHECKING:
    from tigasepy.s2s.certificates import PeerCertificate
    from tigasepy.s2s.service import S2SService

STANZAS = frozenset({"message", "presence", "iq"})
NS_BIDI = "urn:xmpp:bidi"
NS_BIDI_FEATURE = "urn:xmpp:features:bidi"

#: How long a closing stream waits for the peer's ``</stream:stream>``.
CLOSE_TIMEOUT_S = 5.0


def new_stream_id() -> str:
    """A fresh, unguessable stream id (it is part of the dialback key)."""
    return secrets.token_hex(16)


def header(sender: str, target: str | None, stream_id: str | None = None) -> bytes:
    """A ``jabber:server`` stream header declaring the ``db`` prefix (XEP-0220)."""
    attrs = f" from='{domish.escapeToXml(sender, 1)}'"
    if target:
        attrs += f" to='{domish.escapeToXml(target, 1)}'"
    if stream_id:
        attrs += f" id='{stream_id}'"
    return (f"<?xml version='1.0'?><stream:stream xmlns='{ns.SERVER}' xmlns:stream='{ns.STREAMS}' "
            f"xmlns:db='{NS_DIALBACK}'{attrs} version='1.0' xml:lang='en'>").encode("utf-8")


def addresses(stanza: domish.Element) -> tuple[str, str] | None:
    """The lowercased (from, to) domains of a stanza, or None when one is missing."""
    sender = stanza.getAttribute("from")
    target = stanza.getAttribute("to")
    if not sender or not target:
        return None
    return domain_of(sender).lower(), domain_of(target).lower()


class ServerStream(protocol.Protocol):
    """Parsing, writing, closing and the idle timer of one server-to-server stream.

    Subclasses implement ``stream_started(header)``, ``element(element)`` and
    ``stream_closed(reason)``.
    """

    _log = Logger()
    direction = "?"

    def __init__(self, service: "S2SService", direct_tls: bool = False) -> None:
        self.service = service
        self.config = service.config
        self.clock = service.clock
        self.secure = direct_tls
        self.direct_tls = direct_tls
        self.stream_id = ""
        self.closing = False
        self.closed = False
        self.bidi = False
        self._header_sent = False
        self._end_sent = False
        self._in_feed = False
        self._need_reset = False
        self._idle_timer: Any = None
        self._close_timer: Any = None
        self._last_activity = 0.0
        self._peer_certificate: "PeerCertificate | None" = None
        # Small until the peer authenticated a domain (``authenticated_now`` raises it).
        self.parser = StreamParser(self._started, self._element, self._ended,
                                   max_stanza_bytes=self.config.unauthenticated_stanza_size_limit_bytes,
                                   max_depth=self.config.max_depth)
        self.parser.content_namespace = ns.SERVER

    # -- life cycle ---------------------------------------------------------------------
    def connectionMade(self) -> None:
        disable_nagle(self.transport)
        self._last_activity = self.clock.seconds()
        self._idle_timer = self.clock.callLater(self.config.idle_timeout_s, self._check_idle)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.closed = True
        self.closing = True
        for timer in (self._idle_timer, self._close_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._idle_timer = self._close_timer = None
        self.stream_closed(reason)

    def dataReceived(self, data: bytes) -> None:
        if self.closed:
            return
        self._in_feed = True
        try:
            self.parser.feed(data)
        except StreamParseError as e:
            self.close(e.condition, e.text or None)
        except Exception:
            self._log.failure("unexpected error on an {direction} s2s stream with {peer}",
                              direction=self.direction, peer=self.peer_address())
            self.close("internal-server-error")
        finally:
            self._in_feed = False
        if self._need_reset and not self.closed:
            self._need_reset = False
            self.parser.reset()

    def restart(self) -> None:
        """Expect a new stream header (after STARTTLS or SASL)."""
        self._header_sent = False
        if self._in_feed:
            self._need_reset = True
        else:
            self.parser.reset()

    # -- parser callbacks ---------------------------------------------------------------
    def _started(self, attrs: dict[str, str]) -> None:
        if self.closing:
            return
        if attrs["__name__"] != "stream" or attrs["__uri__"] != ns.STREAMS:
            self.close("invalid-namespace", "Expected a stream in the streams namespace")
            return
        if attrs.get("xmlns") != ns.SERVER:
            self.close("invalid-namespace", "This port serves jabber:server")
            return
        self.stream_started(attrs)

    def _element(self, element: domish.Element) -> None:
        if self.closed:
            return
        if element.uri == ns.STREAMS and element.name == "error":
            condition = next((c.name for c in element.elements(ns.STREAM_ERRORS) if c.name != "text"),
                             "undefined-condition")
            self._log.info("{direction} s2s stream with {peer}: the peer sent a stream error: {condition}",
                           direction=self.direction, peer=self.peer_name(), condition=condition)
            self.peer_error(condition)
            self.abort()
            return
        self.element(element)

    def _ended(self) -> None:
        if not self.closing:
            self.close()
        self._finish()

    # -- to override --------------------------------------------------------------------
    def stream_started(self, attrs: dict[str, str]) -> None:
        """The peer's stream header (its attributes)."""
        raise NotImplementedError

    def element(self, element: domish.Element) -> None:
        """A top-level element (stanza, negotiation or dialback element)."""
        raise NotImplementedError

    def stream_closed(self, reason: Failure) -> None:
        """The connection is gone."""

    def stream_closing(self) -> None:
        """The stream is being closed: take no new stanzas for it."""

    def peer_error(self, condition: str) -> None:
        """The peer ended the stream with ``condition``."""

    def peer_name(self) -> str:
        """The peer's domain, or its address before it is known (for logs)."""
        return self.peer_address()

    # -- writing ------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Write raw bytes (negotiation and dialback elements); nothing after our closing tag."""
        if not self.closed and not self._end_sent:
            self.transport.write(data)

    def send_element(self, element: domish.Element) -> None:
        """Write a negotiation element (namespaced, ``stream:`` prefix for stream elements)."""
        self.write(element.toXml(prefixes={ns.STREAMS: "stream"}).encode("utf-8"))

    def send_stanza(self, stanza: domish.Element) -> None:
        """Write a stanza (counts as activity for the idle timer)."""
        if self.closing:
            return
        self._last_activity = self.clock.seconds()
        self.transport.write(to_xml(stanza, ns.SERVER).encode("utf-8"))

    def authenticated_now(self) -> None:
        """A domain is authenticated on this stream: full-size stanzas from now on."""
        self.parser.max_stanza_bytes = self.config.stanza_size_limit_bytes

    def touch(self) -> None:
        """Traffic in either direction: the stream is not idle."""
        self._last_activity = self.clock.seconds()

    def send_header(self, sender: str, target: str | None, stream_id: str | None = None) -> None:
        """Open our side of the stream."""
        self.write(header(sender, target, stream_id))
        self._header_sent = True

    def close(self, condition: str | None = None, text: str | None = None) -> None:
        """End the stream: with a stream error, at once; without one, after the peer's closing tag."""
        if self.closing:
            if condition is not None:
                self.abort()
            return
        self.closing = True
        self.stream_closing()
        if condition is not None:
            if condition not in ("system-shutdown", "connection-timeout"):
                self._log.info("closing {direction} s2s stream with {peer}: {condition} {text}",
                               direction=self.direction, peer=self.peer_name(), condition=condition,
                               text=text or "")
            if not self._header_sent:
                self.send_header(self.local_name(), None, self.stream_id or None)
            error = stream_error(condition, text)
            self.write(error.toXml(prefixes={ns.STREAMS: "stream"}).encode("utf-8"))
            self.write(b"</stream:stream>")
            self._end_sent = True
            self.transport.loseConnection()
            return
        self.write(b"</stream:stream>")
        self._end_sent = True
        self._close_timer = self.clock.callLater(CLOSE_TIMEOUT_S, self._finish)

    def _finish(self) -> None:
        self._close_timer = None
        if not self.closed:
            self.transport.loseConnection()

    def abort(self) -> None:
        """Drop the connection now."""
        self.closing = True
        if not self.closed:
            self.transport.loseConnection()

    def local_name(self) -> str:
        """Our domain on this stream (for a header written only to carry an error)."""
        return self.service.default_domain

    # -- idle timer ---------------------------------------------------------------------
    def _check_idle(self) -> None:
        self._idle_timer = None
        if self.closing:
            return
        idle = self.clock.seconds() - self._last_activity
        limit = self.config.idle_timeout_s
        if idle >= limit:
            self._log.info("closing idle {direction} s2s stream with {peer}", direction=self.direction,
                           peer=self.peer_name())
            self.close()
            return
        self._idle_timer = self.clock.callLater(limit - idle, self._check_idle)

    # -- TLS ----------------------------------------------------------------------------
    def peer_certificate(self) -> "PeerCertificate | None":
        """The peer's certificate, judged against the trust store (None before TLS)."""
        if self._peer_certificate is None and self.secure and self.service.tls is not None:
            self._peer_certificate = self.service.tls.peer(self.transport)
        return self._peer_certificate

    def peer_valid_for(self, domain: str) -> bool:
        """True when the peer's certificate authenticates ``domain``."""
        certificate = self.peer_certificate()
        return certificate is not None and certificate.valid_for(domain)

    def peer_address(self) -> str:
        """``host:port`` of the peer (for logs)."""
        try:
            peer = self.transport.getPeer()
            return f"{peer.host}:{peer.port}"
        except Exception:  # noqa: BLE001 - logging only
            return "?"
