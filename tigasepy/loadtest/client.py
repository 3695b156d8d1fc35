"""The load-test client: one XMPP client stream as a bare Twisted ``Protocol``.

It negotiates what a real client does (RFC 6120): stream header, STARTTLS (the
server certificate is not verified: load targets use self-signed ones), SASL
(SCRAM-SHA-256, SCRAM-SHA-1 or PLAIN), resource binding, the legacy session IQ
when a server still requires it (RFC 3921 section 3), then initial presence
(RFC 6121 section 4.2). After that every stanza goes to ``handler`` as a ``Node``.

Everything is bounded: the TCP connect (``connect_timeout_s``), the whole login
(``login_timeout_s``), each IQ (``iq_timeout_s``) and the bytes of one stanza.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import time
from dataclasses import dataclass
from typing import Any, Callable
from xml.sax.saxutils import escape, quoteattr

from twisted.internet import defer, protocol
from twisted.python.failure import Failure

from tigasepy.loadtest.sasl import SaltedPasswordCache, SaslError, ScramExchange, choose_mechanism, plain_initial
from tigasepy.loadtest.xmlstream import CLIENT, STREAMS, Node, StreamClosed, StreamReader
from tigasepy.log_level import Logger

NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_ROSTER = "jabber:iq:roster"
NS_PING = "urn:xmpp:ping"

Q_FEATURES = f"{STREAMS} features"
Q_STREAM_ERROR = f"{STREAMS} error"
Q_STARTTLS = f"{NS_TLS} starttls"
Q_PROCEED = f"{NS_TLS} proceed"
Q_MECHANISMS = f"{NS_SASL} mechanisms"
Q_CHALLENGE = f"{NS_SASL} challenge"
Q_SUCCESS = f"{NS_SASL} success"
Q_FAILURE = f"{NS_SASL} failure"
Q_BIND = f"{NS_BIND} bind"
Q_SESSION = f"{NS_SESSION} session"
Q_IQ = f"{CLIENT} iq"
Q_MESSAGE = f"{CLIENT} message"
Q_PRESENCE = f"{CLIENT} presence"


@dataclass(frozen=True)
class ClientSettings:
    """How every client of a run connects and logs in."""

    host: str = "127.0.0.1"
    port: int = 5222
    domain: str = "localhost"
    tls: bool = True                    # STARTTLS; False: plain text (needs a server that allows it)
    mechanism: str | None = None        # None: best offered (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN if allowed)
    allow_plain: bool = False
    resource: str = "lt"
    connect_timeout_s: float = 10.0
    login_timeout_s: float = 30.0
    iq_timeout_s: float = 30.0
    initial_presence: bool = True
    max_stanza_bytes: int = 1 << 20


class LoginFailed(Exception):
    """A login did not complete; ``stage`` says where (connect, tls, sasl, bind, timeout, ...)."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


class IqError(Exception):
    """An IQ got an error reply, or no reply in time."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii") if data else "="


def _unb64(node: Node) -> bytes:
    text = node.text.strip()
    if not text or text == "=":
        return b""
    try:
        return base64.b64decode(text)
    except (binascii.Error, ValueError):
        raise SaslError("bad base64 from the server") from None


class LoadClient(protocol.Protocol):
    """One client connection, from TCP connect to a bound resource with presence sent.

    Attributes:
        ready: fires with this client when it can send stanzas; fails with ``LoginFailed``.
        closed: fires (with a reason string) when the connection is gone.
        handler: called with each stanza (``Node``) after login that is not an IQ
            reply this client was waiting for; set by the scenario.
        jid: the full JID the server bound.
        timings: monotonic times of ``start``, ``connected``, ``authenticated``, ``ready``.
    """

    _log = Logger()
    transport: Any = None    # a TCP transport with startTLS and setTcpNoDelay once connected

    def __init__(self, settings: ClientSettings, username: str, password: str,
                 cache: SaltedPasswordCache, clock: Any, resource: str | None = None) -> None:
        self.settings = settings
        self.resource = resource or settings.resource
        self.username = username
        self.password = password
        self.bare = f"{username}@{settings.domain}"
        self.jid = ""
        self.cache = cache
        self.clock = clock
        self.ready: defer.Deferred = defer.Deferred()
        self.closed: defer.Deferred = defer.Deferred()
        self.handler: Callable[[Node], None] = _ignore
        self.timings: dict[str, float] = {"start": time.monotonic()}
        self.error: str | None = None
        self._error_stage: str | None = None
        self.is_ready = False
        self._stage = "connect"
        self._secure = False
        self._exchange: ScramExchange | None = None
        self._ids = itertools.count(1)
        self._pending: dict[str, tuple[defer.Deferred, Any]] = {}
        self._login_timer = clock.callLater(settings.login_timeout_s, self._login_timeout)
        self._reader = StreamReader(self._header, self._node, self._stream_end,
                                    max_stanza_bytes=settings.max_stanza_bytes)

    # -- connection ---------------------------------------------------------------------
    def connectionMade(self) -> None:
        self.timings["connected"] = time.monotonic()
        self._stage = "features"
        try:
            self.transport.setTcpNoDelay(True)   # small request/response writes: no Nagle delays
        except Exception:
            pass
        self._send_header()

    def dataReceived(self, data: bytes) -> None:
        try:
            self._reader.feed(data)
        except StreamClosed as e:
            self._fail("xml", str(e))
        except (SaslError, LoginFailed) as e:
            self._fail(self._stage, str(e))
        except Exception as e:  # a scenario handler bug must not kill the reactor loop
            self._log.failure("load client handler failed")
            self._fail(self._stage, f"client error: {e!r}")

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._cancel_login_timer()
        why = self.error or reason.getErrorMessage()
        if not self.ready.called:
            self.ready.errback(LoginFailed(self._error_stage or self._stage, why))
        pending, self._pending = self._pending, {}
        for d, timer in pending.values():
            if timer.active():
                timer.cancel()
            d.errback(IqError(f"connection lost: {why}"))
        self.is_ready = False
        if not self.closed.called:
            self.closed.callback(why)

    def connect_failed(self, reason: Failure) -> None:
        """The TCP connection could not be made (called by the factory)."""
        self._cancel_login_timer()
        if not self.ready.called:
            self.ready.errback(LoginFailed("connect", reason.getErrorMessage()))
        if not self.closed.called:
            self.closed.callback(reason.getErrorMessage())

    def send(self, data: bytes) -> None:
        """Write raw bytes (a serialized stanza) to the server."""
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        """End the stream politely and drop the connection."""
        if self.transport is not None and not self.closed.called:
            self.transport.write(b"</stream:stream>")
            self.transport.loseConnection()

    def abort(self) -> None:
        """Drop the connection at once."""
        if self.transport is not None and not self.closed.called:
            self.transport.abortConnection()

    def _fail(self, stage: str, reason: str) -> None:
        if self.error is None:
            self.error = reason
            self._error_stage = stage if stage != "timeout" else f"timeout.{self._stage}"
        if self.transport is not None:
            self.transport.abortConnection()

    def _login_timeout(self) -> None:
        self._login_timer = None
        if not self.ready.called:
            self._fail("timeout", f"login not done after {self.settings.login_timeout_s}s (at {self._stage})")
            if self.transport is None:
                self.ready.errback(LoginFailed("timeout", f"during {self._stage}"))

    def _cancel_login_timer(self) -> None:
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        self._login_timer = None

    # -- stream -------------------------------------------------------------------------
    def _send_header(self) -> None:
        self.send(("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                   "xmlns:stream='http://etherx.jabber.org/streams' "
                   f"to={quoteattr(self.settings.domain)} version='1.0'>").encode("utf-8"))

    def _restart(self) -> None:
        self._reader.reset()
        self._send_header()

    def _header(self, attrs: dict[str, str]) -> None:
        pass

    def _stream_end(self) -> None:
        self._fail(self._stage, "the server closed the stream")

    def _node(self, node: Node) -> None:
        if self.is_ready:
            if node.qname == Q_IQ:
                self._iq(node)
            else:
                self.handler(node)
            return
        if node.qname == Q_STREAM_ERROR:
            self._fail(self._stage, "stream error " + ",".join(c.name for c in node.children))
            return
        stage = self._stage
        if stage == "features":
            self._features(node)
        elif stage == "tls":
            if node.qname != Q_PROCEED:
                raise LoginFailed("tls", f"STARTTLS refused ({node.name})")
            from twisted.internet import ssl  # imported late: pyOpenSSL is heavy
            self.transport.startTLS(ssl.CertificateOptions())
            self._secure = True
            self._stage = "features"
            self._restart()
        elif stage == "sasl":
            self._sasl(node)
        elif stage == "bind-features":
            self._bind_features(node)
        elif stage in ("bind", "session"):
            self._iq(node)
        elif node.qname == Q_IQ:
            self._iq(node)

    def _features(self, node: Node) -> None:
        if node.qname != Q_FEATURES:
            raise LoginFailed("features", f"expected stream features, got {node.name}")
        if self.settings.tls and not self._secure:
            if node.child(Q_STARTTLS) is None:
                raise LoginFailed("tls", "the server does not offer STARTTLS")
            self._stage = "tls"
            self.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            return
        mechanisms_node = node.child(Q_MECHANISMS)
        offered = [m.text.strip() for m in mechanisms_node.children] if mechanisms_node else []
        mechanism = choose_mechanism(offered, self.settings.mechanism, self.settings.allow_plain)
        if mechanism is None:
            raise LoginFailed("sasl", f"no usable mechanism among {offered}")
        self._stage = "sasl"
        if mechanism == "PLAIN":
            initial = plain_initial(self.username, self.password)
        else:
            self._exchange = ScramExchange(mechanism, self.username, self.password, self.cache)
            initial = self._exchange.first()
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{_b64(initial)}</auth>".encode())

    def _sasl(self, node: Node) -> None:
        if node.qname == Q_CHALLENGE and self._exchange is not None:
            response = self._exchange.final(_unb64(node))
            self.send(f"<response xmlns='{NS_SASL}'>{_b64(response)}</response>".encode())
        elif node.qname == Q_SUCCESS:
            if self._exchange is not None:
                self._exchange.verify(_unb64(node))
                self._exchange = None
            self.timings["authenticated"] = time.monotonic()
            self._stage = "bind-features"
            self._restart()
        elif node.qname == Q_FAILURE:
            raise LoginFailed("sasl", "failure " + ",".join(c.name for c in node.children))
        else:
            raise LoginFailed("sasl", f"unexpected {node.name}")

    def _bind_features(self, node: Node) -> None:
        if node.qname != Q_FEATURES or node.child(Q_BIND) is None:
            raise LoginFailed("bind", "the server does not offer resource binding")
        session = node.child(Q_SESSION)
        needs_session = session is not None and not any(c.name == "optional" for c in session.children)
        self._stage = "bind"
        payload = (f"<bind xmlns='{NS_BIND}'><resource>{escape(self.resource)}</resource></bind>")
        d = self.iq("set", payload)
        d.addCallback(self._bound, needs_session)
        d.addErrback(lambda f: self._fail("bind", f.getErrorMessage()))

    def _bound(self, result: Node, needs_session: bool) -> Any:
        bind = result.child(Q_BIND)
        jid = bind.children[0].text.strip() if bind is not None and bind.children else ""
        if not jid:
            raise LoginFailed("bind", "no JID in the bind result")
        self.jid = jid
        if needs_session:
            self._stage = "session"
            d = self.iq("set", f"<session xmlns='{NS_SESSION}'/>")
            d.addCallback(lambda _: self._logged_in())
            return d
        self._logged_in()
        return None

    def _logged_in(self) -> None:
        self._cancel_login_timer()
        if self.settings.initial_presence:
            self.send(b"<presence/>")
        self._stage = "ready"
        self.is_ready = True
        self.timings["ready"] = time.monotonic()
        self.ready.callback(self)

    # -- IQs ----------------------------------------------------------------------------
    def iq(self, kind: str, payload: str, to: str | None = None) -> defer.Deferred:
        """Send an IQ; fires with the result ``Node`` or fails with ``IqError`` (bounded wait)."""
        iq_id = f"lt{next(self._ids)}"
        d: defer.Deferred = defer.Deferred()
        timer = self.clock.callLater(self.settings.iq_timeout_s, self._iq_timeout, iq_id)
        self._pending[iq_id] = (d, timer)
        to_attr = f" to={quoteattr(to)}" if to else ""
        self.send(f"<iq type='{kind}' id='{iq_id}'{to_attr}>{payload}</iq>".encode("utf-8"))
        return d

    def _iq_timeout(self, iq_id: str) -> None:
        entry = self._pending.pop(iq_id, None)
        if entry is not None:
            entry[0].errback(IqError(f"no reply to IQ {iq_id} in {self.settings.iq_timeout_s}s"))

    def _iq(self, node: Node) -> None:
        kind = node.get("type")
        if kind in ("result", "error"):
            entry = self._pending.pop(node.get("id") or "", None)
            if entry is None:
                self.handler(node)
                return
            d, timer = entry
            if timer.active():
                timer.cancel()
            if kind == "result":
                d.callback(node)
            else:
                d.errback(IqError("error reply: " + ",".join(
                    c.name for e in node.find("error") for c in e.children)))
            return
        # A request from the server (roster push, ping, ...): answer it so the server is happy.
        iq_id = quoteattr(node.get("id") or "")
        frm = node.get("from")
        to_attr = f" to={quoteattr(frm)}" if frm else ""
        payload = node.children[0] if node.children else None
        if kind == "set" and payload is not None and payload.qname == f"{NS_ROSTER} query":
            self.handler(node)
            self.send(f"<iq type='result' id={iq_id}{to_attr}/>".encode("utf-8"))
        elif kind == "get" and payload is not None and payload.qname == f"{NS_PING} ping":
            self.send(f"<iq type='result' id={iq_id}{to_attr}/>".encode("utf-8"))
        else:
            self.send((f"<iq type='error' id={iq_id}{to_attr}><error type='cancel'>"
                       "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                       "</error></iq>").encode("utf-8"))


def _ignore(node: Node) -> None:
    pass


class _OneClientFactory(protocol.ClientFactory):
    """Connects exactly one ``LoadClient``."""

    def __init__(self, client: LoadClient) -> None:
        self.client = client

    def buildProtocol(self, addr: Any) -> LoadClient:
        return self.client

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.client.connect_failed(reason)


def connect(reactor: Any, settings: ClientSettings, username: str, password: str,
            cache: SaltedPasswordCache, source_address: str | None = None,
            resource: str | None = None) -> LoadClient:
    """Start connecting and logging in one client; watch ``client.ready``."""
    client = LoadClient(settings, username, password, cache, reactor, resource)
    bind = (source_address, 0) if source_address else None
    reactor.connectTCP(settings.host, settings.port, _OneClientFactory(client),
                       timeout=settings.connect_timeout_s, bindAddress=bind)
    return client
