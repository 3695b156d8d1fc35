"""Outgoing server-to-server streams: one route per (local domain, remote domain) pair.

``OutgoingRoute`` owns the connection attempts for one pair: it resolves the remote
domain (``resolver.py``), tries its targets in order, each bounded by
``[s2s] connect_timeout_s``, and meanwhile holds the stanzas for the pair in a bounded
queue. When every target failed, each queued stanza goes back to its sender as an error
(``remote-server-timeout`` when an attempt timed out, ``remote-server-not-found``
otherwise); a full queue refuses more with ``resource-constraint``. Nothing vanishes.

``OutgoingServerStream`` is the initiating side of one stream (RFC 6120 4-6):
STARTTLS (required unless configured otherwise), XEP-0288 ``<bidi/>`` when offered, then
SASL EXTERNAL (XEP-0178) when the peer offers it, else Server Dialback (XEP-0220) with
an XEP-0185 key; a failed EXTERNAL falls back to dialback (XEP-0178 1.2). Dialback
verification requests (``<db:verify/>``, for streams *we* received) ride on these
streams as soon as TLS is done, before the stream itself is authenticated.
"""

from __future__ import annotations

import base64
import collections
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, protocol
from twisted.python.failure import Failure
from twisted.words.xish import domish

from tigasepy.log_level import Logger
from tigasepy.s2s import dialback
from tigasepy.s2s.dialback import NS_DIALBACK
from tigasepy.s2s.resolver import Target
from tigasepy.s2s.stream import NS_BIDI, NS_BIDI_FEATURE, STANZAS, ServerStream, addresses
from tigasepy.xmpp import namespaces as ns

if TYPE_CHECKING:
    from tigasepy.s2s.service import S2SService


@dataclass
class Verification:
    """A ``<db:verify/>`` we ask the authoritative server ``remote`` about.

    ``local`` is our domain (the receiving one), ``stream_id`` the id of the incoming
    stream the key arrived on. ``deferred`` fires with ``("valid" | "invalid" | "error",
    condition)``.
    """

    local: str
    remote: str
    stream_id: str
    key: str
    deferred: defer.Deferred = field(default_factory=defer.Deferred)
    timer: Any = None

    def answer(self, kind: str, condition: str | None = None) -> None:
        """Settle the verification once."""
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if not self.deferred.called:
            self.deferred.callback((kind, condition))


class _State:
    NEW = "new"
    RESOLVING = "resolving"
    CONNECTING = "connecting"
    READY = "ready"
    CLOSED = "closed"


class OutgoingRoute:
    """Stanzas and verification requests from ``local`` to ``remote`` and the stream carrying them."""

    _log = Logger()

    def __init__(self, service: "S2SService", local: str, remote: str) -> None:
        self.service = service
        self.config = service.config
        self.clock = service.clock
        self.local = local
        self.remote = remote
        self.state = _State.NEW
        self.stream: OutgoingServerStream | None = None
        self.queue: collections.deque[domish.Element] = collections.deque()
        self.targets: list[Target] = []
        self._waiting: list[Verification] = []
        self._sent: dict[tuple[str, str, str], Verification] = {}
        self._attempt_timer: Any = None
        self._attempt: defer.Deferred | None = None
        self._condition = "remote-server-not-found"
        self._reason = ""

    def __repr__(self) -> str:
        return f"<OutgoingRoute {self.local} -> {self.remote} {self.state}>"

    # -- what the service asks ------------------------------------------------------------
    def send(self, stanza: domish.Element) -> None:
        """Write ``stanza`` now, or queue it until the stream is authenticated."""
        if self.state == _State.READY and self.stream is not None:
            self.stream.send_stanza(stanza)
            return
        if self.state == _State.CLOSED:
            self.service.bounce(stanza, self._condition)
            return
        if len(self.queue) >= self.config.max_queued_stanzas:
            self._log.warn("s2s queue to {remote} is full; refusing a {kind}", remote=self.remote,
                           kind=stanza.name)
            self.service.bounce(stanza, "resource-constraint")
            return
        self.queue.append(stanza)
        self._ensure_started()

    def verify(self, verification: Verification) -> None:
        """Ask ``remote`` whether a key is valid (over this route's stream, once it is past TLS)."""
        verification.timer = self.clock.callLater(self.config.connect_timeout_s, verification.answer,
                                                  "error", "remote-server-timeout")
        if self.state == _State.CLOSED:
            verification.answer("error", self._condition)
            return
        stream = self.stream
        if stream is not None and stream.verify_ready:
            self._send_verification(stream, verification)
        else:
            self._waiting.append(verification)
            self._ensure_started()

    def take_queue(self) -> list[domish.Element]:
        """Remove and return what is queued (another stream took over the pair)."""
        queued = list(self.queue)
        self.queue.clear()
        return queued

    def close(self, condition: str | None = None, text: str | None = None) -> None:
        """Stop: close the stream (with the stream error ``condition``), bounce what is queued
        (``remote-server-timeout``: the sender may try again later)."""
        if self.state == _State.CLOSED:
            return
        stream, self.stream = self.stream, None
        self._give_up("remote-server-timeout", text or "federation stopped")
        if stream is not None:
            stream.close(condition, text)

    # -- connecting -----------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self.state != _State.NEW:
            return
        self.state = _State.RESOLVING
        d = self.service.resolver.resolve(self.remote)
        d.addCallbacks(self._resolved, self._resolve_failed)

    def _resolved(self, targets: list[Target]) -> None:
        if self.state == _State.CLOSED:
            return
        self.targets = list(targets)
        self.state = _State.CONNECTING
        self._next_target()

    def _resolve_failed(self, failure: Failure) -> None:
        if self.state == _State.CLOSED:
            return
        self._log.info("s2s: no route to {remote}: {reason}", remote=self.remote,
                       reason=failure.getErrorMessage())
        self._give_up("remote-server-not-found", failure.getErrorMessage())

    def _next_target(self) -> None:
        self._cancel_attempt_timer()
        if self.state == _State.CLOSED:
            return
        if not self.targets:
            self._log.info("s2s: could not reach {remote} ({condition}: {reason})", remote=self.remote,
                           condition=self._condition, reason=self._reason)
            self._give_up(self._condition, self._reason)
            return
        target = self.targets.pop(0)
        self._log.debug("s2s: connecting to {remote} at {target}", remote=self.remote, target=str(target))
        self._attempt_timer = self.clock.callLater(self.config.connect_timeout_s, self._attempt_timeout, target)
        factory = _OutgoingFactory(self, target)
        attempt = self.service.connect(self.local, self.remote, target, factory)
        self._attempt = attempt
        attempt.addCallbacks(self._connected, self._connect_failed, errbackArgs=(target,))

    def _connected(self, _stream: Any) -> None:
        self._attempt = None

    def _connect_failed(self, failure: Failure, target: Target) -> None:
        self._attempt = None
        if self.state == _State.CLOSED:
            return
        if failure.check(defer.CancelledError):
            self._condition = "remote-server-timeout"
            self._reason = f"connecting to {target} timed out"
        else:
            if self._condition != "remote-server-timeout":
                self._condition = "remote-server-not-found"
            self._reason = f"{target}: {failure.getErrorMessage()}"
            self._log.info("s2s: connecting to {remote} at {target} failed: {reason}", remote=self.remote,
                           target=str(target), reason=failure.getErrorMessage())
        self._next_target()

    def _attempt_timeout(self, target: Target) -> None:
        self._attempt_timer = None
        self._condition = "remote-server-timeout"
        self._reason = f"{target}: no authenticated stream within {self.config.connect_timeout_s}s"
        self._log.info("s2s: {remote} at {target} did not set up a stream in time", remote=self.remote,
                       target=str(target))
        if self._attempt is not None:
            self._attempt.cancel()          # -> _connect_failed -> next target
        elif self.stream is not None:
            self.stream.abort()             # -> stream_lost -> next target

    def _cancel_attempt_timer(self) -> None:
        if self._attempt_timer is not None and self._attempt_timer.active():
            self._attempt_timer.cancel()
        self._attempt_timer = None

    def _give_up(self, condition: str, reason: str) -> None:
        self._cancel_attempt_timer()
        self.state = _State.CLOSED
        self._condition = condition
        self._reason = reason
        queued = self.take_queue()
        waiting, self._waiting = self._waiting, []
        sent, self._sent = list(self._sent.values()), {}
        self.service.route_closed(self)
        for stanza in queued:
            self.service.bounce(stanza, condition, reason)
        for verification in waiting + sent:
            verification.answer("error", condition)

    # -- what the stream reports ----------------------------------------------------------
    def stream_made(self, stream: "OutgoingServerStream") -> None:
        """A TCP connection is up for ``stream``."""
        if self.state == _State.CLOSED:
            stream.abort()
            return
        self.stream = stream

    def stream_can_verify(self, stream: "OutgoingServerStream") -> None:
        """``stream`` is past TLS: verification requests may go."""
        waiting, self._waiting = self._waiting, []
        for verification in waiting:
            if not verification.deferred.called:
                self._send_verification(stream, verification)

    def _send_verification(self, stream: "OutgoingServerStream", verification: Verification) -> None:
        key = (verification.remote, verification.local, verification.stream_id)
        previous = self._sent.get(key)
        if previous is not None and previous is not verification:
            previous.answer("error", "conflict")
        self._sent[key] = verification
        stream.write(dialback.verify(verification.local, verification.remote, verification.stream_id,
                                     key=verification.key))

    def verification_answered(self, stream: "OutgoingServerStream", element: domish.Element) -> None:
        """A ``<db:verify type=.../>`` arrived on ``stream``."""
        key = ((element.getAttribute("from") or "").lower(), (element.getAttribute("to") or "").lower(),
               element.getAttribute("id") or "")
        verification = self._sent.pop(key, None)
        if verification is None or stream is not self.stream:
            self._log.info("s2s: ignoring an unexpected dialback verification answer from {remote}",
                           remote=self.remote)
            return
        kind = element.getAttribute("type")
        if kind == "valid":
            verification.answer("valid")
        elif kind == "invalid":
            verification.answer("invalid")
        else:
            verification.answer("error", dialback.error_condition(element) or "undefined-condition")

    def stream_authenticated(self, stream: "OutgoingServerStream") -> None:
        """``stream`` may carry stanzas from ``local`` to ``remote`` now: send what waited."""
        if stream is not self.stream or self.state == _State.CLOSED:
            return
        self._cancel_attempt_timer()
        self.state = _State.READY
        self.targets = []
        while self.queue and not stream.closing:
            stream.send_stanza(self.queue.popleft())

    def stream_failed(self, stream: "OutgoingServerStream", condition: str, reason: str) -> None:
        """``stream`` cannot be used (policy, authentication refused): no other target is
        tried, and what waits bounces now rather than when the connection is gone."""
        if stream is not self.stream or self.state == _State.CLOSED:
            return
        self._log.info("s2s: stream to {remote} failed: {reason}", remote=self.remote, reason=reason)
        self.stream = None
        self.targets = []
        self._give_up(condition, reason)

    def stream_closing(self, stream: "OutgoingServerStream") -> None:
        """``stream`` is being closed (idle, peer closed, shutdown): new stanzas need a new route."""
        if stream is self.stream and self.state == _State.READY:
            self.state = _State.CLOSED
            self.service.route_closed(self)

    def stream_lost(self, stream: "OutgoingServerStream") -> None:
        """The connection of ``stream`` is gone."""
        if stream is not self.stream:
            return
        self.stream = None
        sent, self._sent = list(self._sent.values()), {}
        for verification in sent:
            verification.answer("error", "remote-server-not-found")
        if self.state == _State.READY:
            self.state = _State.CLOSED
            self.service.route_closed(self)
        elif self.state != _State.CLOSED:
            self._next_target()


class _OutgoingFactory(protocol.Factory):
    """Builds the one stream of one connection attempt."""

    def __init__(self, route: OutgoingRoute, target: Target) -> None:
        self.route = route
        self.target = target

    def buildProtocol(self, addr: Any) -> "OutgoingServerStream":
        return OutgoingServerStream(self.route, self.target)


class OutgoingServerStream(ServerStream):
    """The initiating side of one server-to-server stream."""

    direction = "outgoing"

    def __init__(self, route: OutgoingRoute, target: Target) -> None:
        super().__init__(route.service, direct_tls=target.direct_tls)
        self.route = route
        self.target = target
        self.local_domain = route.local
        self.remote_domain = route.remote
        self.authenticated = False
        #: How this stream authenticated: "sasl-external" or "dialback" ("" before).
        self.auth_method = ""
        self.verify_ready = False
        self._stage = "header"
        self._features: domish.Element | None = None
        self._external_failed = False
        self._failed = False

    def peer_name(self) -> str:
        return self.remote_domain

    def local_name(self) -> str:
        return self.local_domain

    # -- life cycle ---------------------------------------------------------------------
    def connectionMade(self) -> None:
        super().connectionMade()
        self.route.stream_made(self)
        if not self.closing:
            self.send_header(self.local_domain, self.remote_domain)

    def stream_closed(self, reason: Failure) -> None:
        self.service.stream_closed(self)
        self.route.stream_lost(self)

    def stream_closing(self) -> None:
        self.service.stream_closing(self)
        self.route.stream_closing(self)

    def peer_error(self, condition: str) -> None:
        if not self.authenticated:
            self._fail("remote-server-not-found", f"the peer closed the stream: {condition}", close=False)

    def _fail(self, condition: str, reason: str, close: bool = True) -> None:
        if self._failed:
            return
        self._failed = True
        self.route.stream_failed(self, condition, reason)
        if close:
            self.close()

    # -- policy -------------------------------------------------------------------------
    def _tls_required(self) -> bool:
        return self.config.tls_required and self.remote_domain not in self.config.insecure_domains

    def _dialback_allowed(self) -> bool:
        config = self.config
        domain = self.remote_domain
        return config.dialback or domain in config.unverified_domains or domain in config.insecure_domains

    # -- header and features ------------------------------------------------------------
    def stream_started(self, attrs: dict[str, str]) -> None:
        self.stream_id = attrs.get("id", "")
        if not self.stream_id:
            self._fail("remote-server-not-found", "the peer's stream header has no id")
            return
        if not attrs.get("version", "").startswith("1."):
            self._fail("remote-server-not-found", "the peer does not speak XMPP 1.0")
            return
        if self._stage == "header":
            self._stage = "features"

    def element(self, element: domish.Element) -> None:
        uri, name = element.uri, element.name
        if uri is None and name in STANZAS:
            self._stanza(element)
        elif uri == ns.STREAMS and name == "features":
            self._on_features(element)
        elif uri == ns.TLS and name == "proceed" and self._stage == "starttls":
            self._start_tls()
        elif uri == ns.TLS:
            self._fail("remote-server-not-found", "the peer refused STARTTLS")
        elif uri == ns.SASL and self._stage == "sasl":
            self._sasl_answer(element)
        elif uri == NS_DIALBACK and name == "result":
            self._db_result(element)
        elif uri == NS_DIALBACK and name == "verify":
            if element.getAttribute("type"):
                self.route.verification_answered(self, element)
            else:
                self.write(dialback.verify(self.local_domain, element.getAttribute("from") or "",
                                           element.getAttribute("id") or "", type="error",
                                           condition="feature-not-implemented"))
        else:
            self.close("unsupported-stanza-type", f"Unexpected element {name}")

    def _on_features(self, features: domish.Element) -> None:
        if self._stage == "sasl-restart":
            self._ready()
            return
        if self._stage != "features":
            return
        self._features = features
        if not self.secure:
            starttls = _child(features, ns.TLS, "starttls")
            if starttls is not None and self.service.tls is not None:
                self._stage = "starttls"
                self.write(f"<starttls xmlns='{ns.TLS}'/>".encode())
                return
            if self._tls_required():
                self._fail("remote-server-not-found", "the peer offers no TLS, and TLS is required")
                return
        elif not self._dialback_allowed() and not self.peer_valid_for(self.remote_domain):
            self._fail("remote-server-not-found", "the peer's certificate is not valid for "
                       f"{self.remote_domain} ({self._certificate_problem()}), and dialback is off")
            return
        if self.config.bidi and _child(features, NS_BIDI_FEATURE, "bidi") is not None:
            self.write(f"<bidi xmlns='{NS_BIDI}'/>".encode())
            self.bidi = True
        self.verify_ready = True
        self.route.stream_can_verify(self)
        self._authenticate()

    def _certificate_problem(self) -> str:
        certificate = self.peer_certificate()
        return "no TLS" if certificate is None else certificate.problem(self.remote_domain)

    def _authenticate(self) -> None:
        features = self._features
        mechanisms = _child(features, ns.SASL, "mechanisms") if features is not None else None
        offered = {str(m).strip() for m in mechanisms.elements(ns.SASL, "mechanism")} if mechanisms else set()
        if (self.config.sasl_external and self.secure and "EXTERNAL" in offered
                and not self._external_failed):
            self._stage = "sasl"
            authzid = base64.b64encode(self.local_domain.encode("utf-8")).decode("ascii")
            self.write(f"<auth xmlns='{ns.SASL}' mechanism='EXTERNAL'>{authzid}</auth>".encode())
            return
        if self._dialback_allowed():
            self._stage = "dialback"
            key = self.service.dialback_key(self.remote_domain, self.local_domain, self.stream_id)
            self.write(dialback.result(self.local_domain, self.remote_domain, key=key))
            return
        self._fail("remote-server-not-found", "no authentication method left (SASL EXTERNAL refused, "
                   "dialback off)")

    def _start_tls(self) -> None:
        assert self.service.tls is not None      # STARTTLS is only asked for with TLS available
        self.transport.startTLS(self.service.tls.client(self.remote_domain, local=self.local_domain))
        self.secure = True
        self._stage = "header"
        self.restart()
        self.send_header(self.local_domain, self.remote_domain)

    def _sasl_answer(self, element: domish.Element) -> None:
        if element.name == "success":
            self._log.info("outgoing s2s stream to {remote} authenticated with SASL EXTERNAL",
                           remote=self.remote_domain)
            self._stage = "sasl-restart"
            self.auth_method = "sasl-external"
            self.restart()
            self.send_header(self.local_domain, self.remote_domain)
        elif element.name == "failure":
            condition = next((c.name for c in element.elements() if c.name != "text"), "not-authorized")
            self._log.info("outgoing s2s stream to {remote}: SASL EXTERNAL refused ({condition}); trying "
                           "dialback", remote=self.remote_domain, condition=condition)
            self._external_failed = True
            self._stage = "features"
            self._authenticate()
        else:
            self._fail("remote-server-not-found", f"unexpected SASL element {element.name}")

    def _db_result(self, element: domish.Element) -> None:
        kind = element.getAttribute("type")
        if not kind:
            # A dialback request on our own stream (XEP-0288 piggybacking): not supported.
            self.write(dialback.result(self.local_domain, element.getAttribute("from") or "", type="error",
                                       condition="feature-not-implemented"))
            return
        sender = (element.getAttribute("from") or "").lower()
        target = (element.getAttribute("to") or "").lower()
        if self._stage != "dialback" or sender != self.remote_domain or target != self.local_domain:
            self._log.info("s2s: ignoring an unexpected dialback result from {remote}", remote=self.remote_domain)
            return
        if kind == "valid":
            self._log.info("outgoing s2s stream to {remote} authenticated with dialback",
                           remote=self.remote_domain)
            self.auth_method = "dialback"
            self._ready()
        elif kind == "invalid":
            self._fail("remote-server-not-found", "the peer did not accept our dialback key")
        else:
            condition = dialback.error_condition(element) or "undefined-condition"
            self._fail("remote-server-timeout" if condition == "remote-server-timeout"
                       else "remote-server-not-found", f"dialback error: {condition}")

    def _ready(self) -> None:
        self._stage = "ready"
        self.authenticated = True
        self.authenticated_now()
        self.route.stream_authenticated(self)

    # -- stanzas from the peer (XEP-0288) -----------------------------------------------
    def _stanza(self, stanza: domish.Element) -> None:
        if not self.authenticated or not self.bidi:
            self.close("not-authorized", "This stream is not bidirectional")
            return
        pair = addresses(stanza)
        if pair is None:
            self.close("improper-addressing", "Stanzas between servers need 'from' and 'to'")
            return
        sender, target = pair
        if sender != self.remote_domain:
            self.close("invalid-from", f"{sender} is not authenticated on this stream")
            return
        if target != self.local_domain and not self.service.is_local(target):
            self.close("host-unknown", f"This server does not serve {target}")
            return
        self.touch()
        self.service.inbound(stanza)


def _child(parent: domish.Element, uri: str, name: str) -> domish.Element | None:
    for child in parent.elements(uri, name):
        return child
    return None
