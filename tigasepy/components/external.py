"""The server side of external components: XEP-0114 ``jabber:component:accept`` streams.

A component connects to the component listener, names its domain in the stream
header's ``to``, and proves it knows that domain's secret with a ``<handshake/>``
(hex SHA-1 of the stream id followed by the secret). Once accepted, the router sends
the domain's stanzas down this stream, and the component's stanzas are routed like
any other, after the address checks:

- ``from`` must be the component's domain or a JID in it (``user@comp.example.org/r``);
  anything else ends the stream with ``invalid-from``. A missing ``from`` is stamped
  with the component's domain (XEP-0114 requires it; some components omit it).
- ``to`` is required (``bad-request``) and must be a valid JID (``jid-malformed``).

While no component is connected for a configured domain, its route stays taken by an
``UnavailableComponent`` that bounces with ``service-unavailable``: stanzas for it never
leave the server (a default route would hand them to federation). One connection per
domain: a second authenticated one is refused with ``conflict``.

Neither the secret nor the handshake digest is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any, Iterable

from twisted.internet import protocol
from twisted.python.failure import Failure
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.components import ComponentListenerConfig, ExternalComponentConfig
from tigasepy.interfaces import IComponent, IRouter
from tigasepy.log_level import Logger
from tigasepy.sm.dispatch import error_reply_for
from tigasepy.stream.parser import StreamParseError, StreamParser
from tigasepy.stream.tcp import disable_nagle
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import StanzaError, stream_error
from tigasepy.xmpp.jid import InvalidFormat, domain_of, parse_jid
from tigasepy.xmpp.serialize import to_xml

_STANZAS = frozenset({"message", "presence", "iq"})


def handshake_digest(stream_id: str, secret: str) -> str:
    """The XEP-0114 handshake value: lowercase hex SHA-1 of stream id + secret."""
    return hashlib.sha1((stream_id + secret).encode("utf-8")).hexdigest()


def strict_jid(text: str) -> Any:
    """``parse_jid`` that also refuses an empty localpart or resource (``@host``, ``host/``)."""
    jid = parse_jid(text)
    if jid is None:
        raise InvalidFormat("empty JID")
    head, slash, _resource = text.partition("/")
    if ("@" in head and not jid.user) or (slash and not jid.resource):
        raise InvalidFormat("empty localpart or resource")
    return jid


def _escape_attr(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&apos;").replace('"', "&quot;"))


def bounce(router: IRouter, stanza: domish.Element, condition: str, text: str | None = None) -> None:
    """Answer ``stanza`` with a stanza error through ``router``, unless it must not be answered
    (errors, IQ results, presence other than available and subscribe, no sender)."""
    kind = stanza.getAttribute("type")
    if kind in ("error", "result") or not stanza.getAttribute("from"):
        return
    if stanza.name == "presence" and kind not in (None, "subscribe"):
        return
    router.route(StanzaError(condition, text).to_response(stanza))


@implementer(IComponent)
class UnavailableComponent:
    """Holds the route of an external component's domain while it is not connected."""

    def __init__(self, domain: str, router: IRouter) -> None:
        self.domain = domain
        self._router = router

    def receive(self, stanza: domish.Element) -> None:
        """Bounce with ``service-unavailable``: the component is configured but not connected."""
        bounce(self._router, stanza, "service-unavailable", "The component is not connected")


class _State:
    HEADER = "header"          # waiting for the component's stream header
    HANDSHAKE = "handshake"    # header answered; waiting for <handshake/>
    READY = "ready"            # authenticated: stanzas flow
    CLOSED = "closed"


@implementer(IComponent)
class ComponentAcceptStream(protocol.Protocol):
    """One external component connection (XEP-0114 accept); the route of its domain once accepted."""

    _log = Logger()

    def __init__(self, factory: "ComponentAcceptFactory") -> None:
        self.factory = factory
        self.config: ComponentListenerConfig = factory.config
        self.domain = ""
        self.stream_id = ""
        self.state = _State.HEADER
        self._header_sent = False
        self._counted_unauthenticated = False
        self._handshake_timer: Any = None
        self._keepalive_timer: Any = None
        self._last_activity = 0.0
        self._ping_id: str | None = None
        self._pinged_at: float | None = None
        self.parser = StreamParser(self._stream_started, self._element, self._stream_ended,
                                   max_stanza_bytes=self.config.stanza_size_limit_bytes,
                                   max_depth=self.config.max_depth)
        self.parser.content_namespace = ns.COMPONENT

    # -- connection life cycle ----------------------------------------------------------
    def connectionMade(self) -> None:
        disable_nagle(self.transport)
        clock = self.factory.clock
        self._last_activity = clock.seconds()
        self._handshake_timer = clock.callLater(self.config.handshake_timeout_s, self._handshake_overdue)
        self.factory.connection_opened(self)
        self._counted_unauthenticated = True
        if self.factory.unauthenticated > self.config.max_unauthenticated:
            self._log.warn("too many unauthenticated component connections; refusing {peer}", peer=self._peer())
            self.close("resource-constraint", "Too many connections being set up")

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        was_ready = self.state == _State.READY
        self.state = _State.CLOSED
        self._cancel_timers()
        self._leave_unauthenticated()
        self.factory.connection_closed(self)
        if was_ready:
            self._log.info("component {domain} disconnected", domain=self.domain)

    def dataReceived(self, data: bytes) -> None:
        if self.state == _State.CLOSED:
            return
        self._last_activity = self.factory.clock.seconds()
        self._pinged_at = None
        try:
            self.parser.feed(data)
        except StreamParseError as e:
            self.close(e.condition, e.text or None)
        except Exception:
            self._log.failure("unexpected error on the stream of component {domain} from {peer}",
                              domain=self.domain or "?", peer=self._peer())
            self.close("internal-server-error")

    def close(self, condition: str | None = None, text: str | None = None) -> None:
        """End the stream, with a stream error when ``condition`` is given."""
        if self.state == _State.CLOSED:
            return
        if condition is not None:
            if condition != "system-shutdown":
                self._log.info("closing component stream {domain} from {peer}: {condition}",
                               domain=self.domain or "?", peer=self._peer(), condition=condition)
            if not self._header_sent:
                self._send_header()
            error = stream_error(condition, text)
            self.transport.write(error.toXml(prefixes={ns.STREAMS: "stream"}).encode("utf-8"))
        self.transport.write(b"</stream:stream>")
        self.state = _State.CLOSED
        self._cancel_timers()
        # The route goes back to the placeholder now, not when the socket is gone.
        self.factory.connection_closed(self)
        self.transport.loseConnection()

    # -- IComponent: stanzas from the router to the component ---------------------------
    def receive(self, stanza: domish.Element) -> None:
        """Write a stanza for the component's domain down the stream (``from`` stamped if absent)."""
        if self.state != _State.READY:
            bounce(self.factory.router, stanza, "service-unavailable", "The component is not connected")
            return
        to = stanza.getAttribute("to") or ""
        if domain_of(to).lower() != self.domain:
            self._log.warn("not writing a {kind} for {to} to component {domain}", kind=stanza.name, to=to,
                           domain=self.domain)
            return
        if not stanza.getAttribute("from"):
            stanza["from"] = self.factory.server_domain
        self.transport.write(to_xml(stanza, ns.COMPONENT).encode("utf-8"))

    # -- stream header and handshake -----------------------------------------------------
    def _send_header(self) -> None:
        self.stream_id = secrets.token_hex(16)
        domain = self.domain or self.factory.server_domain
        self.transport.write(
            ("<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
             f"xmlns='{ns.COMPONENT}' from='{_escape_attr(domain)}' id='{self.stream_id}'>").encode("utf-8"))
        self._header_sent = True

    def _stream_started(self, header: dict[str, str]) -> None:
        if self.state != _State.HEADER:
            self.close("bad-format", "The stream header came twice")
            return
        if header["__name__"] != "stream" or header["__uri__"] != ns.STREAMS:
            self.close("invalid-namespace", "Expected a stream in the streams namespace")
            return
        if header.get("xmlns") != ns.COMPONENT:
            self.close("invalid-namespace", f"This port serves {ns.COMPONENT}")
            return
        to = (header.get("to") or "").lower()
        if not to:
            self.close("improper-addressing", "The stream header needs the component's domain in 'to'")
            return
        if to not in self.factory.components:
            self._log.info("component connection from {peer} for unknown domain {to}", peer=self._peer(),
                           to=to[:100])
            self.close("host-unknown", "No external component is configured for this domain")
            return
        self.domain = to
        self._send_header()
        self.state = _State.HANDSHAKE

    def _handshake(self, element: domish.Element) -> None:
        secret = self.factory.components[self.domain].secret
        expected = handshake_digest(self.stream_id, secret).encode("ascii")
        offered = str(element).strip().lower().encode("utf-8", "replace")
        if not hmac.compare_digest(expected, offered):
            self._log.warn("component {domain} from {peer}: wrong handshake", domain=self.domain,
                           peer=self._peer())
            self.close("not-authorized", "Wrong handshake")
            return
        if not self.factory.component_ready(self):
            self._log.warn("component {domain} from {peer}: already connected; refusing the new connection",
                           domain=self.domain, peer=self._peer())
            self.close("conflict", "This component is already connected")
            return
        self.state = _State.READY
        self._leave_unauthenticated()
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None
        self.transport.write(b"<handshake/>")
        self._log.info("component {domain} connected from {peer}", domain=self.domain, peer=self._peer())
        self._schedule_keepalive(self.config.keepalive_s)

    def _stream_ended(self) -> None:
        self.close()

    # -- elements -----------------------------------------------------------------------
    def _element(self, element: domish.Element) -> None:
        state = self.state
        if state == _State.READY:
            self._stanza(element)
        elif state == _State.HANDSHAKE:
            if element.uri is None and element.name == "handshake":
                self._handshake(element)
            else:
                self.close("not-authorized", "Send the handshake first")

    def _stanza(self, stanza: domish.Element) -> None:
        if stanza.uri is not None or stanza.name not in _STANZAS:
            self.close("unsupported-stanza-type", f"Unknown top-level element {stanza.name}")
            return
        kind = stanza.getAttribute("type")
        if (self._ping_id is not None and stanza.name == "iq" and kind in ("result", "error")
                and stanza.getAttribute("id") == self._ping_id):
            self._ping_id = None   # the answer to our keepalive ping
            return
        claimed = stanza.getAttribute("from")
        if claimed:
            try:
                sender = strict_jid(claimed)
            except InvalidFormat:
                sender = None
            if sender is None or sender.host != self.domain:
                self._log.warn("component {domain} sent from {claimed}; closing", domain=self.domain,
                               claimed=claimed[:200])
                self.close("invalid-from", f"A component may only send from its domain {self.domain}")
                return
            stanza["from"] = sender.full()
        else:
            stanza["from"] = self.domain
        to = stanza.getAttribute("to")
        if not to:
            self._refuse(stanza, "bad-request", "A component's stanzas need a 'to' address")
            return
        try:
            recipient = strict_jid(to)
        except InvalidFormat:
            self._refuse(stanza, "jid-malformed", None)
            return
        stanza["to"] = recipient.full()
        self.factory.router.route(stanza)

    def _refuse(self, stanza: domish.Element, condition: str, text: str | None) -> None:
        reply = error_reply_for(stanza, StanzaError(condition, text))
        if reply is not None:
            reply.attributes.pop("from", None)
            if not reply.getAttribute("to"):
                reply["to"] = self.domain
            reply["from"] = self.factory.server_domain
            self.transport.write(to_xml(reply, ns.COMPONENT).encode("utf-8"))

    # -- timers -------------------------------------------------------------------------
    def _handshake_overdue(self) -> None:
        self._handshake_timer = None
        if self.state != _State.READY:
            self.close("connection-timeout", "No handshake in time")

    def _schedule_keepalive(self, delay: float) -> None:
        if self.config.keepalive_s > 0 and self.state == _State.READY:
            self._keepalive_timer = self.factory.clock.callLater(max(delay, 0.001), self._keepalive)

    def _keepalive(self) -> None:
        """Ping a silent component; one that stays silent is taken as gone."""
        self._keepalive_timer = None
        if self.state != _State.READY:
            return
        clock = self.factory.clock
        now = clock.seconds()
        if self._pinged_at is not None:
            if now - self._pinged_at >= self.config.keepalive_timeout_s:
                self.close("connection-timeout", "No answer to a ping")
                return
            self._schedule_keepalive(self._pinged_at + self.config.keepalive_timeout_s - now)
            return
        idle = now - self._last_activity
        if idle < self.config.keepalive_s:
            self._schedule_keepalive(self.config.keepalive_s - idle)
            return
        self._ping_id = "keepalive-" + secrets.token_hex(6)
        self._pinged_at = now
        self.transport.write(
            (f"<iq type='get' id='{self._ping_id}' from='{_escape_attr(self.factory.server_domain)}' "
             f"to='{_escape_attr(self.domain)}'><ping xmlns='{ns.PING}'/></iq>").encode("utf-8"))
        self._schedule_keepalive(self.config.keepalive_timeout_s)

    def _cancel_timers(self) -> None:
        for timer in (self._handshake_timer, self._keepalive_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._handshake_timer = self._keepalive_timer = None

    def _leave_unauthenticated(self) -> None:
        if self._counted_unauthenticated:
            self._counted_unauthenticated = False
            self.factory.unauthenticated -= 1

    def _peer(self) -> str:
        try:
            peer = self.transport.getPeer()
            return f"{peer.host}:{peer.port}"
        except Exception:
            return "?"


class ComponentAcceptFactory(protocol.Factory):
    """The XEP-0114 listener's factory: the configured components and who is connected.

    Args:
        config: the ``[components]`` listener options (limits, timers).
        components: the ``external = true`` components (domain and secret).
        router: where accepted components' stanzas go and their domains are routed.
        clock: the reactor, for timers.
        server_domain: the address the server's own stanzas (keepalive pings, errors) come from.
    """

    protocol = ComponentAcceptStream  # type: ignore[assignment]

    def __init__(self, config: ComponentListenerConfig, components: Iterable[ExternalComponentConfig],
                 router: IRouter, clock: Any, server_domain: str) -> None:
        self.config = config
        self.components = {c.domain: c for c in components}
        self.router = router
        self.clock = clock
        self.server_domain = server_domain
        self.streams: set[ComponentAcceptStream] = set()
        self.connected: dict[str, ComponentAcceptStream] = {}
        self.unauthenticated = 0
        self._placeholders = {domain: UnavailableComponent(domain, router) for domain in self.components}
        self.attached = False

    def buildProtocol(self, addr: Any) -> ComponentAcceptStream:
        return ComponentAcceptStream(self)

    def attach(self) -> None:
        """Take the routes of every configured domain (bouncing until its component connects)."""
        self.attached = True
        for domain, placeholder in self._placeholders.items():
            self.router.add_route(domain, self.connected.get(domain, placeholder))

    def detach(self) -> None:
        """Close every component stream and give the routes up (server shutdown)."""
        self.close_all()
        self.attached = False
        for domain in self._placeholders:
            self.router.remove_route(domain)

    def close_all(self, condition: str = "system-shutdown") -> None:
        """End every open component stream."""
        for stream in list(self.streams):
            stream.close(condition, "The server is shutting down")

    def reconfigure(self, config: ComponentListenerConfig, components: Iterable[ExternalComponentConfig]) -> None:
        """Apply a reloaded ``[components]`` without touching unaffected connections.

        New limits apply to connections made from now on. A domain no longer configured is
        closed with ``host-gone`` and its route given up; one whose secret changed is closed
        with ``reset`` (it must authenticate again); new domains are held until they connect.
        """
        self.config = config
        new = {c.domain: c for c in components}
        for domain, old in list(self.components.items()):
            stream = self.connected.get(domain)
            if domain not in new:
                if stream is not None:
                    stream.close("host-gone", "This component is no longer configured")
                del self._placeholders[domain]
                if self.attached:
                    self.router.remove_route(domain)
            elif new[domain].secret != old.secret and stream is not None:
                stream.close("reset", "The component's secret changed")
        for stream in list(self.streams):
            if stream.state != _State.READY and stream.domain and stream.domain not in new:
                stream.close("host-gone", "This component is no longer configured")
        self.components = new
        for domain in new:
            if domain not in self._placeholders:
                self._placeholders[domain] = UnavailableComponent(domain, self.router)
                if self.attached:
                    self.router.add_route(domain, self._placeholders[domain])

    def connection_opened(self, stream: ComponentAcceptStream) -> None:
        self.streams.add(stream)
        self.unauthenticated += 1

    def component_ready(self, stream: ComponentAcceptStream) -> bool:
        """``stream`` authenticated for its domain: route the domain to it, unless one is connected."""
        current = self.connected.get(stream.domain)
        if current is not None and current is not stream:
            return False
        self.connected[stream.domain] = stream
        if self.attached:
            self.router.add_route(stream.domain, stream)
        return True

    def connection_closed(self, stream: ComponentAcceptStream) -> None:
        self.streams.discard(stream)
        if self.connected.get(stream.domain) is stream:
            del self.connected[stream.domain]
            if self.attached:
                self.router.add_route(stream.domain, self._placeholders[stream.domain])

    def is_connected(self, domain: str) -> bool:
        """True while a component is connected for ``domain``."""
        return domain.lower() in self.connected
