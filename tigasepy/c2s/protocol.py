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
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.c2s.csi import CSI, CsiBuffer
from tigasepy.c2s.stream_management import SM, AckState, DetachedSession, add_delay, parse_h
from tigasepy.interfaces import (
    IClientSession, SaslChallenge, SaslContext, SaslFailure, SaslSuccess,
)
from tigasepy.log_level import Logger
from tigasepy.stream.parser import StreamParseError, StreamParser, parse_stanza
from tigasepy.stream.tcp import disable_nagle
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import StanzaError, stream_error
from tigasepy.xmpp.serialize import to_xml
from tigasepy.xmpp.stanza import iq_result

if TYPE_CHECKING:
    from tigasepy.c2s.factory import ClientStreamFactory

_STANZAS = frozenset({"message", "presence", "iq"})
_MAX_QUEUED = 64
# A bound stream quiet for this long parks its XML parser (StreamParser.park): most of
# an idle stream's Python memory; the next input rebuilds it (some microseconds).
_PARK_AFTER_S = 1.0


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

    # Slots: one instance per connection (Protocol itself has no __slots__, so a __dict__
    # still exists for subclasses and tests, but stays unallocated).
    __slots__ = ("factory", "transport", "connected", "config", "secure", "jid", "domain", "username",
                 "stream_id", "state", "_header_sent", "_counted_unauthenticated", "_auth_failures",
                 "_exchange", "_mechanism", "_busy", "_queue", "_in_feed", "_need_reset", "_timer",
                 "_auth_timer", "_last_activity", "_full", "_bare", "acks", "_awaiting_ack",
                 "_since_request", "_request_timer", "_ack_timer", "_csi", "parser", "_binding")

    def __init__(self, factory: "ClientStreamFactory", direct_tls: bool = False) -> None:
        self.transport: Any = None
        self.connected = 0
        self.factory = factory
        self.config = factory.config
        self.secure = direct_tls
        self._binding: Any = None       # TLS channel-binding data, once worked out (until SASL ends)
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
        # Stanzas that arrive while a SASL step or bind is under way (created on first use).
        self._queue: collections.deque[domish.Element] | None = None
        self._in_feed = False
        self._need_reset = False
        self._timer: Any = None
        self._auth_timer: Any = None
        self._last_activity = 0.0
        self._full = ""
        self._bare = ""
        # XEP-0198: the session's ack state once enabled (it moves on resumption).
        self.acks: AckState | None = None
        self._awaiting_ack = False
        self._since_request = 0
        self._request_timer: Any = None
        self._ack_timer: Any = None
        # XEP-0352: what is held back while the client is inactive (None: active).
        self._csi: CsiBuffer | None = None
        self.parser = StreamParser(self._stream_started, self._element, self._stream_ended,
                                   max_stanza_bytes=self.config.stanza_size_limit_bytes,
                                   max_depth=self.config.max_depth)
        self.parser.content_namespace = ns.CLIENT

    # -- connection life cycle ----------------------------------------------------------
    def connectionMade(self) -> None:
        disable_nagle(self.transport)
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
            # No </stream:stream>: the stream is unfinished (XEP-0198 section 6).
            self._leave_session(keep=True)

    def dataReceived(self, data: bytes) -> None:
        if self.state == _State.CLOSED:
            return
        self._last_activity = self.factory.clock.seconds()
        if self.parser.parked:
            self._park_soon()
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
        """Write a stanza to the client (held back while it is inactive, XEP-0352)."""
        if self.state == _State.CLOSED:
            return
        csi = self._csi
        if csi is not None:
            if csi.hold(stanza):
                if csi.full:
                    self._flush_held()
                return
            self._flush_held()
            if self.state == _State.CLOSED:
                return
        self._write_stanza(stanza)

    def close(self, condition: str | None = None, text: str | None = None,
              app_condition: domish.Element | None = None, keep_session: bool = False) -> None:
        """End the stream, with a stream error when ``condition`` is given.

        ``keep_session``: a resumable session (XEP-0198) outlives this stream (used when
        the client went silent); otherwise the session ends with the stream.
        """
        if self.state == _State.CLOSED:
            return
        if condition is not None:
            if condition not in ("system-shutdown", "conflict", "connection-timeout"):
                self._log.info("closing client stream from {peer}: {condition}", peer=self._peer(),
                               condition=condition)
            if not self._header_sent:
                self._send_header()
            error = stream_error(condition, text)
            if app_condition is not None:
                error.addChild(app_condition)
            self.transport.write(error.toXml(prefixes={ns.STREAMS: "stream"}).encode("utf-8"))
        self.transport.write(b"</stream:stream>")
        was_bound = self.state == _State.BOUND
        self.state = _State.CLOSED
        if was_bound:
            self._leave_session(keep=keep_session)
        self.transport.loseConnection()

    def _leave_session(self, keep: bool) -> None:
        """This stream no longer carries its session: detach it for resumption, or end it.

        Stanzas held back for an inactive client count as sent: they are resent on
        resumption or bounced (re-delivered, stored offline) when the session ends.
        """
        self._cancel_ack_timers()
        acks, self.acks = self.acks, None
        held = self._csi.drain() if self._csi is not None else []
        self._csi = None
        registry = self.factory.resumption
        if acks is not None:
            now = self.factory.clock.seconds()
            for stanza in held:
                acks.queue.append((to_xml(stanza), now))
            if keep and acks.resumable and registry.detach(self, acks):
                return
        registry.finish(self, acks)

    # -- writing stanzas (XEP-0198 counting, XEP-0352 batching) --------------------------
    def _write_stanza(self, stanza: domish.Element) -> None:
        data = to_xml(stanza)
        acks = self.acks
        if acks is None:
            self.transport.write(data.encode("utf-8"))
            return
        acks.queue.append((data, self.factory.clock.seconds()))
        if len(acks.queue) > self.config.stream_management.max_unacked:
            self.close("policy-violation", "Too many unacknowledged stanzas")
            return
        self.transport.write(data.encode("utf-8"))
        self._since_request += 1
        if not self._awaiting_ack:
            if self._since_request >= self.config.stream_management.ack_request_every_stanzas:
                self._request_ack()
            elif self._request_timer is None:
                self._request_timer = self.factory.clock.callLater(
                    self.config.stream_management.ack_request_every_s, self._request_due)

    def _flush_held(self) -> None:
        csi = self._csi
        if csi is None:
            return
        for stanza in csi.drain():
            if self.state == _State.CLOSED:
                return
            self._write_stanza(stanza)

    # -- XEP-0198 acks -------------------------------------------------------------------
    def _request_due(self) -> None:
        self._request_timer = None
        if self.state == _State.BOUND and self.acks is not None and self.acks.queue and not self._awaiting_ack:
            self._request_ack()

    def _request_ack(self) -> None:
        if self._request_timer is not None and self._request_timer.active():
            self._request_timer.cancel()
        self._request_timer = None
        self._awaiting_ack = True
        self._since_request = 0
        self.transport.write(f"<r xmlns='{SM}'/>".encode())
        timeout = self.config.stream_management.ack_timeout_s
        if timeout and self._ack_timer is None:
            self._ack_timer = self.factory.clock.callLater(timeout, self._ack_overdue)

    def _ack_overdue(self) -> None:
        """The client did not answer an ack request in time: its connection is taken as dead."""
        self._ack_timer = None
        if self.state != _State.BOUND:
            return
        self._log.info("{jid}: no ack within {seconds}s; dropping the connection", jid=self._full,
                       seconds=self.config.stream_management.ack_timeout_s)
        self.transport.abortConnection()

    def _cancel_ack_timers(self) -> None:
        for timer in (self._request_timer, self._ack_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._request_timer = self._ack_timer = None
        self._awaiting_ack = False
        self._since_request = 0

    def _sm_failed(self, condition: str, h: int | None = None) -> None:
        failed = domish.Element((SM, "failed"))
        if h is not None:
            failed["h"] = str(h)
        failed.addElement((ns.STANZA_ERRORS, condition))
        self.transport.write(failed.toXml().encode("utf-8"))

    def _too_high(self, acks: AckState, h: int) -> None:
        """XEP-0198 section 7: an ``h`` beyond what was sent ends the stream."""
        sent = acks.sent
        app = domish.Element((SM, "handled-count-too-high"))
        app["h"] = str(h)
        app["send-count"] = str(sent)
        self.close("undefined-condition", f"You acknowledged {h} stanzas, but I only sent you {sent} so far.",
                   app_condition=app)

    def _sm_element(self, element: domish.Element) -> None:
        """``<enable/>``, ``<r/>``, ``<a/>`` or ``<resume/>`` on a bound stream."""
        name = element.name
        acks = self.acks
        if name == "r":
            if acks is not None:
                handed_over = self.factory.handed_over
                if handed_over is None:
                    self.transport.write(f"<a xmlns='{SM}' h='{acks.inbound}'/>".encode())
                else:
                    # The SM is in another process: a stanza is handled once it is safe there.
                    h = acks.inbound
                    handed_over().addCallback(lambda _: self._write_ack(acks, h))
        elif name == "a":
            if acks is None:
                return
            h = parse_h(element.getAttribute("h"))
            if h is None:
                self.close("bad-format", "An <a/> needs an 'h' between 0 and 2^32-1")
                return
            if not acks.check(h):
                self._too_high(acks, h)
                return
            acks.ack(h)
            self._awaiting_ack = False
            if self._ack_timer is not None and self._ack_timer.active():
                self._ack_timer.cancel()
            self._ack_timer = None
            if acks.queue:
                if self._since_request >= self.config.stream_management.ack_request_every_stanzas:
                    self._request_ack()
                elif self._request_timer is None:
                    self._request_timer = self.factory.clock.callLater(
                        self.config.stream_management.ack_request_every_s, self._request_due)
        elif name == "enable":
            if not self.config.stream_management.enabled:
                self._sm_failed("feature-not-implemented")
            elif acks is not None:
                self._sm_failed("unexpected-request")   # at most one <enable/> (XEP-0198 3)
            else:
                self._enable(element)
        elif name == "resume":
            self._sm_failed("unexpected-request")       # a bound stream cannot resume another
        else:
            self.close("unsupported-stanza-type", f"Unknown stream management element {name}")

    def _write_ack(self, acks: AckState, h: int) -> None:
        if self.state == _State.BOUND and self.acks is acks:
            self.transport.write(f"<a xmlns='{SM}' h='{h}'/>".encode())

    def _enable(self, element: domish.Element) -> None:
        config = self.config.stream_management
        acks = AckState(self._bare, self.jid)
        acks.holder = self
        enabled = domish.Element((SM, "enabled"))
        if element.getAttribute("resume") in ("true", "1") and config.resume_timeout_s > 0:
            max_s = config.resume_timeout_s
            wanted = parse_h(element.getAttribute("max"))
            if wanted:
                max_s = min(max_s, wanted)
            enabled["id"] = self.factory.resumption.grant(acks, max_s)
            enabled["resume"] = "true"
            enabled["max"] = str(max_s)
            if config.location:
                enabled["location"] = config.location
        self.acks = acks
        self._since_request = 0
        self._awaiting_ack = False
        self.transport.write(enabled.toXml().encode("utf-8"))

    def _resume(self, element: domish.Element) -> None:
        """``<resume previd h/>`` on an authenticated stream, before bind (XEP-0198 5)."""
        if not self.config.stream_management.enabled:
            self._sm_failed("feature-not-implemented")
            return
        previd = element.getAttribute("previd")
        h = parse_h(element.getAttribute("h"))
        if not previd or h is None:
            self._sm_failed("bad-request")
            return
        try:
            owner = JID(tuple=(self.username, self.domain, None)).userhost()
        except InvalidFormat:
            self._sm_failed("item-not-found")
            return
        registry = self.factory.resumption
        acks = registry.lookup(previd, owner)
        if acks is None:
            self._sm_failed("item-not-found", registry.ended_h(previd, owner))
            return
        if not acks.check(h):
            self._too_high(acks, h)
            return
        old = acks.holder
        if isinstance(old, DetachedSession):
            registry.unpark(old)
        elif isinstance(old, ClientStream) and old is not self and old.state == _State.BOUND:
            old._hand_over()
        else:
            self._sm_failed("item-not-found")
            return
        if not self.factory.sm.replace_handle(old, self):
            if isinstance(old, DetachedSession):
                old.end()
            registry.forget(acks)
            self._sm_failed("item-not-found")
            return
        acks.ack(h)
        acks.holder = self
        self.acks = acks
        self.jid = acks.jid
        self._full = acks.jid.full()
        self._bare = acks.jid.userhost()
        self.state = _State.BOUND
        self._leave_unauthenticated()
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self._auth_timer = None
        self._log.info("{jid} resumed its session from {peer} ({count} stanzas to resend)", jid=self._full,
                       peer=self._peer(), count=len(acks.queue))
        resumed = domish.Element((SM, "resumed"))
        resumed["previd"] = previd
        resumed["h"] = str(acks.inbound)
        self.transport.write(resumed.toXml().encode("utf-8"))
        domain = acks.jid.host
        for xml, first_sent in list(acks.queue):
            if xml.startswith(("<message", "<presence")):
                stanza = parse_stanza(xml)
                add_delay(stanza, domain, first_sent)
                xml = to_xml(stanza)
            self.transport.write(xml.encode("utf-8"))
        if acks.queue:
            self._request_ack()
        self._park_soon()

    def _hand_over(self) -> None:
        """This half-open stream's session was resumed on another connection: drop this one."""
        acks, self.acks = self.acks, None
        self._cancel_ack_timers()
        if self._csi is not None and acks is not None:
            now = self.factory.clock.seconds()
            for stanza in self._csi.drain():
                acks.queue.append((to_xml(stanza), now))
        self._csi = None
        self._log.info("{jid}: session resumed elsewhere; closing the old stream", jid=self._full)
        error = stream_error("conflict", "The session was resumed on another connection")
        self.transport.write(error.toXml(prefixes={ns.STREAMS: "stream"}).encode("utf-8"))
        self.transport.write(b"</stream:stream>")
        self.state = _State.CLOSED
        self.transport.loseConnection()

    # -- XEP-0352 client state -----------------------------------------------------------
    def _csi_element(self, element: domish.Element) -> None:
        if element.name == "inactive":
            if self._csi is None:
                self._csi = CsiBuffer(self.config.csi.max_buffered)
        elif element.name == "active":
            self._flush_held()
            self._csi = None
        else:
            self.close("unsupported-stanza-type", f"Unknown client state element {element.name}")

    # -- timers -------------------------------------------------------------------------
    def _check_idle(self) -> None:
        self._timer = None
        if self.state == _State.CLOSED:
            self.transport.abortConnection()   # closed, but the peer never let go
            return
        clock = self.factory.clock
        idle = clock.seconds() - self._last_activity
        if idle >= self.config.idle_timeout_s:
            self.close("connection-timeout", "No data for too long", keep_session=True)
            return
        delay = self.config.idle_timeout_s - idle
        if self.state == _State.BOUND and not self.parser.parked:
            if idle >= _PARK_AFTER_S:
                self.parser.park()   # refused in the middle of a stanza: it stays
            else:
                delay = min(delay, _PARK_AFTER_S - idle)
        self._timer = clock.callLater(delay, self._check_idle)

    def _park_soon(self) -> None:
        """Have the idle check run ``_PARK_AFTER_S`` from now, to park the parser then."""
        timer = self._timer
        if timer is None or not timer.active():
            return
        clock = self.factory.clock
        if timer.getTime() - clock.seconds() > _PARK_AFTER_S:
            timer.cancel()
            self._timer = clock.callLater(_PARK_AFTER_S, self._check_idle)

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
        self._header_sent = False
        if self.username is not None and to != self.domain:
            # Authenticated for one hosted domain: the restarted stream may not switch to
            # another, where the same username is someone else (and owns other sessions).
            self.close("not-authorized", f"Authenticated for {self.domain}; restart the stream to it")
            return
        if self.sm_hosts(to):
            self.domain = to
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
            if self.config.stream_management.enabled:
                features.addElement((SM, "sm"))
            if self.config.csi.enabled:
                features.addElement((CSI, "csi"))
            for element in self.factory.sm.features_for(self.domain, True):
                features.addChild(element)
        self.transport.write(features.toXml(prefixes={ns.STREAMS: "stream"}).encode("utf-8"))

    def _stream_ended(self) -> None:
        self.close()

    # -- elements -----------------------------------------------------------------------
    def _element(self, element: domish.Element) -> None:
        if self._busy:
            queue = self._queue
            if queue is None:
                queue = self._queue = collections.deque()
            if len(queue) >= _MAX_QUEUED:
                self.close("policy-violation", "Too many stanzas while authenticating")
                return
            queue.append(element)
            return
        state = self.state
        if state == _State.BOUND:
            uri = element.uri
            if uri is None:
                self._stanza(element)
            elif uri == SM:
                self._sm_element(element)
            elif uri == CSI and self.config.csi.enabled:
                self._csi_element(element)
            else:
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
        if self.acks is not None:
            self.acks.count_inbound()
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
        # Asked for up to three times per login (mechanisms, advertisement, exchange):
        # worked out once, when the TLS handshake has finished.
        if not self.secure:
            return None
        binding = self._binding
        if binding is None:
            binding = self._binding = self.factory.channel_binding(self.transport)
        return binding

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
            self._binding = None
            self._log.debug("{user}@{domain} authenticated with {mechanism} from {peer}",
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
        if stanza.uri == SM:
            if stanza.name == "resume":
                self._resume(stanza)
            elif stanza.name == "enable":
                self._sm_failed("unexpected-request")   # only after bind (XEP-0198 3)
            return
        if stanza.uri == CSI:
            return   # client state matters once stanzas flow
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
                bound = self.factory.sm.bind(self, self.username, self.domain, resource or None)
            except StanzaError as e:
                self.send(e.to_response(stanza))
                return
            if isinstance(bound, defer.Deferred):
                # A session manager in another process answers later; stanzas wait meanwhile.
                self._busy = True
                bound.addCallbacks(self._bound, self._bind_failed, callbackArgs=(stanza,),
                                   errbackArgs=(stanza,))
                bound.addBoth(self._unbusy)
                return
            self._bound(bound, stanza)
        elif payload.uri == ns.SESSION and payload.name == "session":
            self.send(iq_result(stanza))
        else:
            self.close("not-authorized", "Bind a resource first")

    def _bind_failed(self, failure: Failure, stanza: domish.Element) -> None:
        if self.state == _State.CLOSED:
            return
        if failure.check(StanzaError):
            self.send(failure.value.to_response(stanza))
            return
        self._log.failure("bind failed", failure)
        self.send(StanzaError("internal-server-error").to_response(stanza))

    def _bound(self, jid: JID, stanza: domish.Element) -> None:
        """The session manager bound ``jid`` to this stream: stanzas flow from now on."""
        if self.state == _State.CLOSED:
            self.factory.sm.unbind(self)   # the client left while the bind was under way
            return
        self.jid = jid
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
        self._park_soon()

    def reconfigure(self, config: Any) -> None:
        """Apply new ``[c2s]`` limits to this open stream (a configuration reload).

        The stanza size and depth limits apply from the next stanza, the idle timeout
        from now; the XEP-0198 and CSI settings from their next use.
        """
        self.config = config
        self.parser.max_stanza_bytes = config.stanza_size_limit_bytes
        self.parser.max_depth = config.max_depth
        timer = self._timer
        if timer is not None and timer.active():
            timer.cancel()
            clock = self.factory.clock
            remaining = config.idle_timeout_s - (clock.seconds() - self._last_activity)
            self._timer = clock.callLater(max(0.0, remaining), self._check_idle)
            if self.state == _State.BOUND and not self.parser.parked:
                self._park_soon()

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
