"""The server side of one client stream (RFC 6120 sections 4 to 8).

Negotiation is an explicit state machine: header, STARTTLS, SASL, restart, bind.
Once bound, every stanza is stamped with the session's full JID and handed to
the session manager through ``ISessionManager``; the SM writes back through
this object's ``IClientSession`` side. No exception escapes ``dataReceived``:
bad input becomes the RFC 6120 stream error and a clean close of this stream.
"""

from __future__ import annotations

import base64
import binascii
import collections
import secrets
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.interfaces import (
    IClientSession, SaslChallenge, SaslContext, SaslFailure, SaslSuccess,
)
from tigasepy.stream.parser import StreamParseError, StreamParser
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import StanzaError, stream_error
from tigasepy.xmpp.serialize import to_xml
from tigasepy.xmpp.stanza import iq_result

if TYPE_CHECKING:
    from tigasepy.c2s.factory import ClientStreamFactory

_STANZAS = frozenset({"message", "presence", "iq"})
_MAX_QUEUED = 64


class _State:
    """Negotiation stages of a client stream."""

    HEADER = "header"          # waiting for the (re)started stream header
    FEATURES = "features"      # header seen; negotiating TLS or SASL
    SASL = "sasl"              # an exchange is under way
    AUTHENTICATED = "auth"     # SASL done, stream restarted, waiting for bind
    BOUND = "bound"            # resource bound: stanzas flow
    CLOSED = "closed"


@implementer(IClientSession)
class ClientStream(protocol.Protocol):
    """One client connection; also the session handle the SM holds once bound."""

    _log = Logger()

    def __init__(self, factory: "ClientStreamFactory", direct_tls: bool = False) -> None:
        self.factory = factory
        self.config = factory.config
        self.secure = direct_tls
        self.jid: JID | None = None
        self.domain: str = ""
        self.username: str | None = None
        self.stream_id = ""
        self.state = _State.HEADER
        self._header_sent = False
        self._counted_unauthenticated = False
        self._auth_failures = 0
        self._exchange: Any = None
        self._mechanism = ""
        self._busy = False
        self._queue: collections.deque[domish.Element] = collections.deque()
        self._in_feed = False
        self._need_reset = False
        self._timer: Any = None
        self._auth_timer: Any = None
        self._last_activity = 0.0
        self._full = ""
        self._bare = ""
        self.parser = StreamParser(self._stream_started, self._element, self._stream_ended,
                                   max_stanza_bytes=self.config.stanza_size_limit_bytes,
                                   max_depth=self.config.max_depth)
        self.parser.content_namespace = ns.CLIENT

    # -- connection life cycle ----------------------------------------------------------
    def connectionMade(self) -> None:
        clock = self.factory.clock
        self._last_activity = clock.seconds()
        self._timer = clock.callLater(self.config.idle_timeout_s, self._check_idle)
        self._auth_timer = clock.callLater(self.config.auth_timeout_s, self._auth_timeout)
        self.factory.connection_opened(self)
        self._counted_unauthenticated = True
        if self.factory.unauthenticated > self.config.max_unauthenticated:
            self._log.warn("too many unauthenticated streams; refusing {peer}", peer=self._peer())
            self.close("resource-constraint", "Too many connections being set up")

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        previous = self.state
        self.state = _State.CLOSED
        for timer in (self._timer, self._auth_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._auth_timer = None
        self._leave_unauthenticated()
        self.factory.connection_closed(self)
        if previous == _State.BOUND:
            self.factory.sm.unbind(self)

    def dataReceived(self, data: bytes) -> None:
        if self.state == _State.CLOSED:
            return
        self._last_activity = self.factory.clock.seconds()
        self._in_feed = True
        try:
            self.parser.feed(data)
        except StreamParseError as e:
            self.close(e.condition, e.text or None)
        except Exception:
            self._log.failure("unexpected error on a client stream from {peer}", peer=self._peer())
            self.close("internal-server-error")
        finally:
            self._in_feed = False
        if self._need_reset and self.state != _State.CLOSED:
            self._need_reset = False
            self.parser.reset()

    # -- IClientSession -----------------------------------------------------------------
    def send(self, stanza: domish.Element) -> None:
        """Write a stanza to the client."""
        if self.state != _State.CLOSED:
            self.transport.write(to_xml(stanza).encode("utf-8"))

    def close(self, condition: str | None = None, text: str | None = None) -> None:
        """End the stream, with a stream error when ``condition`` is given."""
        if self.state == _State.CLOSED:
            return
        if condition is not None:
            if condition not in ("system-shutdown", "conflict", "connection-timeout"):
                self._log.info("closing client stream from {peer}: {condition}", peer=self._peer(),
                               condition=condition)
            if not self._header_sent:
                self._send_header()
            self.transport.write(stream_error(condition, text).toXml(prefixes={ns.STREAMS: "stream"}).encode("utf-8"))
        self.transport.write(b"</stream:stream>")
        was_bound = self.state == _State.BOUND
        self.state = _State.CLOSED
        if was_bound:
            self.factory.sm.unbind(self)
        self.transport.loseConnection()

    # -- timers -------------------------------------------------------------------------
    def _check_idle(self) -> None:
        self._timer = None
        clock = self.factory.clock
        idle = clock.seconds() - self._last_activity
        if idle >= self.config.idle_timeout_s:
            self.close("connection-timeout", "No data for too long")
        else:
            self._timer = clock.callLater(self.config.idle_timeout_s - idle, self._check_idle)

    def _auth_timeout(self) -> None:
        self._auth_timer = None
        if self.state != _State.BOUND:
            self.close("connection-timeout", "Authentication took too long")

    def _leave_unauthenticated(self) -> None:
        if self._counted_unauthenticated:
            self._counted_unauthenticated = False
            self.factory.unauthenticated -= 1

    # -- stream header ------------------------------------------------------------------
    def _send_header(self) -> None:
        self.stream_id = secrets.token_urlsafe(12)
        domain = self.domain or self.factory.default_domain
        self.transport.write(
            ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
             "xmlns:stream='http://etherx.jabber.org/streams' "
             f"id='{self.stream_id}' from='{domain}' version='1.0' xml:lang='en'>").encode("utf-8"))
        self._header_sent = True

    def _stream_started(self, header: dict[str, str]) -> None:
        to = (header.get("to") or "").lower()
        if self.sm_hosts(to):
            self.domain = to
        self._header_sent = False
        if header["__name__"] != "stream" or header["__uri__"] != ns.STREAMS:
            self.close("invalid-namespace", "Expected a stream in the streams namespace")
            return
        if header.get("xmlns") != ns.CLIENT:
            self.close("invalid-namespace", "This port serves jabber:client")
            return
        if not to:
            self.close("host-unknown", "The stream header needs a 'to' domain")
            return
        if not self.sm_hosts(to):
            self.close("host-unknown", f"This server does not serve {to}")
            return
        version = header.get("version", "0.9")
        if not version.startswith("1."):
            self.close("unsupported-version", "XMPP 1.0 streams only")
            return
        self._send_header()
        if self.state == _State.HEADER:
            self.state = _State.FEATURES if self.username is None else _State.AUTHENTICATED
        self._send_features()

    def sm_hosts(self, domain: str) -> bool:
        """True when ``domain`` is served here."""
        return bool(domain) and self.factory.sm.is_local_domain(domain)

    def _send_features(self) -> None:
        features = domish.Element((ns.STREAMS, "features"))
        tls_possible = not self.secure and self.factory.tls_context is not None
        if self.state == _State.FEATURES:
            if tls_possible:
                starttls = features.addElement((ns.TLS, "starttls"))
                if self.config.tls_required:
                    starttls.addElement("required")
            if self.secure or not self.config.tls_required or self.factory.tls_context is None:
                # Nothing but STARTTLS is offered before a required TLS (RFC 6120 5.3.1).
                for element in self.factory.sm.features_for(self.domain, False):
                    features.addChild(element)
                mechanisms = self.factory.auth.mechanisms(self._sasl_context(with_binding=True))
                if mechanisms:
                    mech_el = features.addElement((ns.SASL, "mechanisms"))
                    for name in mechanisms:
                        mech_el.addElement("mechanism", content=name)
                    binding = self._channel_binding()
                    if binding is not None and binding.types:
                        cb = features.addElement(("urn:xmpp:sasl-cb:0", "sasl-channel-binding"))
                        for kind in sorted(binding.types):
                            cb.addElement("channel-binding")["type"] = kind
        else:
            features.addElement((ns.BIND, "bind"))
            session = features.addElement((ns.SESSION, "session"))
            session.addElement("optional")
            for element in self.factory.sm.features_for(self.domain, True):
                features.addChild(element)
        self.transport.write(features.toXml(prefixes={ns.STREAMS: "stream"}).encode("utf-8"))

    def _stream_ended(self) -> None:
        self.close()

    # -- elements -----------------------------------------------------------------------
    def _element(self, element: domish.Element) -> None:
        if self._busy:
            if len(self._queue) >= _MAX_QUEUED:
                self.close("policy-violation", "Too many stanzas while authenticating")
                return
            self._queue.append(element)
            return
        state = self.state
        if state == _State.BOUND:
            self._stanza(element)
        elif state == _State.FEATURES or state == _State.SASL:
            self._negotiate(element)
        elif state == _State.AUTHENTICATED:
            self._pre_bind(element)

    def _drain(self) -> None:
        while self._queue and not self._busy and self.state != _State.CLOSED:
            self._element(self._queue.popleft())

    def _stanza(self, stanza: domish.Element) -> None:
        if stanza.uri is not None or stanza.name not in _STANZAS:
            self.close("unsupported-stanza-type", f"Unknown top-level element {stanza.name}")
            return
        claimed = stanza.attributes.get("from")
        if claimed is not None and claimed != self._full and claimed != self._bare:
            self.close("invalid-from", "The from address does not match the stream")
            return
        stanza.attributes["from"] = self._full
        self.factory.sm.receive(self, stanza)

    # -- STARTTLS and SASL --------------------------------------------------------------
    def _negotiate(self, element: domish.Element) -> None:
        uri, name = element.uri, element.name
        if uri == ns.TLS and name == "starttls" and self.state == _State.FEATURES:
            self._starttls()
        elif uri == ns.SASL:
            if name == "auth" and self.state == _State.FEATURES:
                self._sasl_auth(element)
            elif name == "response" and self.state == _State.SASL:
                self._sasl_step(_decode(element))
            elif name == "abort" and self.state == _State.SASL:
                self._sasl_fail(SaslFailure("aborted"))
            else:
                self.close("not-authorized", "Unexpected SASL element")
        elif uri is None and name == "iq" and self.state == _State.FEATURES:
            self._unauthenticated_iq(element)
        else:
            self.close("not-authorized", "Authenticate first")

    def _starttls(self) -> None:
        if self.secure or self.factory.tls_context is None:
            self.transport.write(f"<failure xmlns='{ns.TLS}'/></stream:stream>".encode())
            self.state = _State.CLOSED
            self.transport.loseConnection()
            return
        self.transport.write(f"<proceed xmlns='{ns.TLS}'/>".encode())
        self.transport.startTLS(self.factory.tls_context)
        self.secure = True
        self.state = _State.HEADER
        self._restart()

    def _restart(self) -> None:
        if self._in_feed:
            self._need_reset = True
        else:
            self.parser.reset()

    def _channel_binding(self) -> Any:
        if not self.secure:
            return None
        return self.factory.channel_binding(self.transport)

    def _sasl_context(self, with_binding: bool) -> SaslContext:
        return SaslContext(domain=self.domain, secure=self.secure,
                           channel_binding=self._channel_binding() if with_binding else None,
                           peer=self._peer())

    def _sasl_auth(self, element: domish.Element) -> None:
        if not self.secure and self.config.tls_required and self.factory.tls_context is not None:
            self._sasl_failure_element("encryption-required")
            return
        mechanism = element.getAttribute("mechanism", "")
        context = self._sasl_context(with_binding=True)
        try:
            self._exchange = self.factory.auth.start(mechanism, context)
        except SaslFailure as failure:
            self._sasl_fail(failure)
            return
        self._mechanism = mechanism
        self.state = _State.SASL
        initial = _decode(element)
        self._sasl_step(initial)

    def _sasl_step(self, data: bytes | None | SaslFailure) -> None:
        if isinstance(data, SaslFailure):
            self._sasl_fail(data)
            return
        self._busy = True
        d = defer.maybeDeferred(self._exchange.step, data)
        d.addCallbacks(self._sasl_result, self._sasl_error)
        d.addBoth(self._unbusy)

    def _unbusy(self, _: Any) -> None:
        self._busy = False
        self._drain()

    def _sasl_result(self, result: Any) -> None:
        if self.state == _State.CLOSED:
            return
        if isinstance(result, SaslChallenge):
            self.transport.write(_sasl_element("challenge", result.data))
            return
        if isinstance(result, SaslSuccess):
            self.username = result.username
            self._exchange = None
            self._log.info("{user}@{domain} authenticated with {mechanism} from {peer}",
                           user=result.username, domain=self.domain, mechanism=self._mechanism,
                           peer=self._peer())
            self.transport.write(_sasl_element("success", result.data))
            self.state = _State.HEADER
            self._restart()

    def _sasl_error(self, failure: Failure) -> None:
        if self.state == _State.CLOSED:
            return
        if failure.check(SaslFailure):
            self._sasl_fail(failure.value)
            return
        self._log.failure("SASL exchange failed unexpectedly", failure)
        self._sasl_fail(SaslFailure("temporary-auth-failure"))

    def _sasl_fail(self, failure: SaslFailure) -> None:
        self._exchange = None
        self.state = _State.FEATURES
        self._auth_failures += 1
        self._log.info("authentication failed ({condition}) for a stream from {peer}",
                       condition=failure.condition, peer=self._peer())
        self._sasl_failure_element(failure.condition, failure.text)
        if self._auth_failures >= self.config.max_auth_failures:
            self.close("policy-violation", "Too many failed authentication attempts")

    def _sasl_failure_element(self, condition: str, text: str | None = None) -> None:
        failure = domish.Element((ns.SASL, "failure"))
        failure.addElement(condition)
        if text:
            failure.addElement("text", content=text)
        self.transport.write(failure.toXml().encode("utf-8"))

    def _unauthenticated_iq(self, stanza: domish.Element) -> None:
        if not self.secure and self.config.tls_required and self.factory.tls_context is not None:
            self.close("policy-violation", "Use STARTTLS first")
            return
        stanza.attributes.pop("from", None)
        self._busy = True
        d = self.factory.sm.unauthenticated_iq(self.domain, stanza)
        d.addCallback(self._write_if_open)
        d.addErrback(lambda f: self._log.failure("unauthenticated IQ failed", f))
        d.addBoth(self._unbusy)

    def _write_if_open(self, reply: domish.Element | None) -> None:
        if reply is not None and self.state != _State.CLOSED:
            reply.attributes.pop("to", None)
            self.send(reply)

    # -- resource binding ---------------------------------------------------------------
    def _pre_bind(self, stanza: domish.Element) -> None:
        if stanza.uri is not None or stanza.name != "iq":
            self.close("not-authorized", "Bind a resource first")
            return
        payload = next(stanza.elements(), None)
        if payload is None or stanza.getAttribute("type") != "set":
            self.close("not-authorized", "Bind a resource first")
            return
        if payload.uri == ns.BIND and payload.name == "bind":
            resource_el = next(payload.elements(ns.BIND, "resource"), None)
            resource = str(resource_el).strip() if resource_el is not None else None
            try:
                self.jid = self.factory.sm.bind(self, self.username, self.domain, resource or None)
            except StanzaError as e:
                self.send(e.to_response(stanza))
                return
            self._full = self.jid.full()
            self._bare = self.jid.userhost()
            self.state = _State.BOUND
            self._leave_unauthenticated()
            if self._auth_timer is not None and self._auth_timer.active():
                self._auth_timer.cancel()
            self._auth_timer = None
            bind = domish.Element((ns.BIND, "bind"))
            bind.addElement("jid", content=self._full)
            self.send(iq_result(stanza, bind))
        elif payload.uri == ns.SESSION and payload.name == "session":
            self.send(iq_result(stanza))
        else:
            self.close("not-authorized", "Bind a resource first")

    def _peer(self) -> str:
        try:
            peer = self.transport.getPeer()
            return f"{peer.host}:{peer.port}"
        except Exception:
            return "?"


def _decode(element: domish.Element) -> bytes | None | SaslFailure:
    """The base64 payload of a SASL element: None when absent, b"" for '='."""
    text = str(element).strip()
    if not text:
        return None
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return SaslFailure("incorrect-encoding")


def _sasl_element(name: str, data: bytes | None) -> bytes:
    if data is None:
        return f"<{name} xmlns='{ns.SASL}'/>".encode()
    encoded = base64.b64encode(data).decode() if data else "="
    return f"<{name} xmlns='{ns.SASL}'>{encoded}</{name}>".encode()
