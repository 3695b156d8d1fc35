"""The connection manager's end of the link: c2s talks to a session manager in another process.

A connection-manager process (``[server] roles = ["c2s"]``) has no stores, no accounts
and no credentials. Its c2s listeners get a ``RemoteSessionManager`` as their
``ISessionManager`` and its ``RemoteAuthentication`` as their ``IAuthenticationService``;
both relay over the link (``link.py``) to the session-manager process, which dials in.

What crosses, connection manager to session manager (numbered frames):

- ``req`` with an ``id``: ``sasl`` (mechanism, context, first response), ``sasl-step``,
  ``bind`` (with the one-time grant the SM handed out at SASL success), ``uiq`` (an
  unauthenticated IQ such as XEP-0077 registration); each answered by a ``res`` or
  failed after ``request_timeout_s``;
- ``recv`` (a client stanza of session ``sid``), ``unbind`` (with how many stanzas the
  session was given, so the SM re-delivers those that never reached it), ``route`` and
  ``redeliver`` (XEP-0198 bounces), ``settle`` (stanzas the clients acknowledged).

Session manager to connection manager: ``res``, ``send`` and ``close`` for a session,
``features`` (the stream features and SASL mechanisms to offer, pushed at link start
and after a reload), ``bye`` (the session manager shuts down).

Link failures: while the link is down, client sockets stay open and their stanzas queue
(bounded by ``[link] max_queued``) for the grace period; requests wait up to
``request_timeout_s``. When the link session is lost (the grace period ran out, or the
session manager restarted), every client stream ends with ``system-shutdown`` (their
unacknowledged stanzas are re-delivered through the next link session) and new
clients are turned away until a session manager connects again.

XEP-0198 resumption stays inside one connection-manager process: the SM keeps one
handle per session (``sid``) and the process moves it between streams locally
(``replace_handle``), so nothing crosses the link for it.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.c2s.factory import ClientStreamFactory
from tigasepy.config import Config
from tigasepy.interfaces import (
    IAuthenticationService, IClientSession, ISaslExchange, ISessionManager, SaslChallenge, SaslContext,
    SaslFailure, SaslSuccess,
)
from tigasepy.log_level import Logger
from tigasepy.router.link import (
    LinkProtocol, LinkSession, LinkSettings, b64, frames_with_stanzas, needs_settling, unb64,
)
from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import StanzaError, stream_error

_MODULUS = 2 ** 32
_SETTLE_DELAY_S = 0.02
_MAX_GRANTS_PER_ACCOUNT = 8


class LinkUnavailable(Exception):
    """The session manager did not answer (link down past the timeout, or the session lost)."""


def mechanism_key(secure: bool, binding_types: Any) -> str:
    """The key of one line of the mechanism table the SM pushes (see ``link_sm.snapshot``)."""
    if not secure:
        return "-"
    return "+" + ",".join(sorted(binding_types or ()))


@dataclass
class _Session:
    """One bound client session as this end knows it."""

    sid: int
    handle: Any
    given: int = 0                      # stanzas from the SM handed to the handle
    markers: collections.deque = field(default_factory=collections.deque)   # (index, h that acks it)
    reported: int = 0                   # what the last settle said


@implementer(ISessionManager)
class RemoteSessionManager(LinkSession):
    """``ISessionManager`` for c2s in a connection-manager process: everything goes over the link.

    Args:
        config: the whole configuration (``[server] domains``, ``[link]``).
        clock: time and timers.
        connections: the c2s streams of this process (closed when the link session is lost).
    """

    _log = Logger()

    def __init__(self, config: Config, clock: IReactorTime, connections: set[Any] | None = None) -> None:
        super().__init__(config.link, clock, "to the session manager")
        self.domains = frozenset(config.server.domains)
        self.connections: set[Any] = connections if connections is not None else set()
        self.resumption: Any = None          # the c2s ResumptionRegistry (its sessions end with the link)
        self.auth = RemoteAuthentication(self)
        self._features: dict[str, dict[str, list[domish.Element]]] = {}
        self._sm_domains: frozenset[str] | None = None
        self.mechanism_table: dict[str, dict[str, list[str]]] = {}
        self._next_id = 0
        self._requests: dict[int, tuple[defer.Deferred, Any]] = {}
        self._sessions: dict[int, _Session] = {}
        self._sid_of: dict[Any, int] = {}
        self._grants: dict[tuple[str, str], collections.deque[str]] = {}
        self._settle_timer: Any = None
        self._settle_dirty: set[int] = set()
        self._session_counter = 0

    # -- state ---------------------------------------------------------------------------
    @property
    def serving(self) -> bool:
        """True while a link session exists (new client streams are accepted)."""
        return self.session_id is not None

    def session_count(self) -> int:
        """How many client sessions are bound through the link."""
        return len(self._sessions)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # -- LinkProtocol's accept (this end listens) -----------------------------------------
    def accept(self, session_id: str | None, h: int) -> tuple[LinkSession, str, bool, int]:
        """A session manager authenticated and asks to resume ``session_id`` (or None)."""
        if session_id is not None and session_id == self.session_id:
            return self, session_id, True, self.received
        import secrets

        return self, secrets.token_urlsafe(18), False, 0

    # -- ISessionManager -----------------------------------------------------------------
    def is_local_domain(self, domain: str) -> bool:
        """True for a domain of ``[server] domains`` that the session manager hosts too (once
        it said which it hosts)."""
        return domain in self.domains and (self._sm_domains is None or domain in self._sm_domains)

    def features_for(self, domain: str, authenticated: bool) -> list[domish.Element]:
        """The stream features the session manager's extensions offer (pushed over the link)."""
        return list(self._features.get(domain, {}).get("post" if authenticated else "pre", ()))

    def unauthenticated_iq(self, domain: str, stanza: domish.Element) -> defer.Deferred:
        """Relay an IQ of an unauthenticated stream (XEP-0077); fires with the reply."""
        d = self.request("uiq", {"domain": domain}, stanza)

        def answered(result: tuple[dict[str, Any], domish.Element | None]) -> domish.Element:
            reply = result[1]
            if reply is None:
                raise ValueError("no reply stanza")
            return reply

        def failed(failure: Failure) -> domish.Element:
            failure.trap(LinkUnavailable)
            return StanzaError("service-unavailable", "The server is not available").to_response(stanza)

        return d.addCallbacks(answered, failed)

    def bind(self, session: IClientSession, username: str, domain: str, resource: str | None) -> defer.Deferred:
        """Relay a bind; fires with the full JID or fails with ``StanzaError``."""
        grants = self._grants.get((username, domain))
        grant = grants.popleft() if grants else ""
        if grants is not None and not grants:
            del self._grants[(username, domain)]
        self._session_counter += 1
        sid = self._session_counter
        entry = _Session(sid, session)
        self._sessions[sid] = entry
        self._sid_of[session] = sid
        d = self.request("bind", {"sid": sid, "user": username, "domain": domain, "resource": resource,
                                  "grant": grant, "secure": bool(session.secure)})

        def bound(result: tuple[dict[str, Any], Any]) -> JID:
            header = result[0]
            if "jid" in header:
                return JID(header["jid"])
            self._forget(sid)
            if grant:
                self._grants.setdefault((username, domain), collections.deque()).appendleft(grant)
            raise StanzaError(str(header.get("condition") or "internal-server-error"), header.get("text"))

        def failed(failure: Failure) -> None:
            self._forget(sid)
            if failure.check(LinkUnavailable):
                raise StanzaError("resource-constraint", "The server is busy; try again")
            return failure  # type: ignore[return-value]

        return d.addCallbacks(bound, failed)

    def unbind(self, session: IClientSession) -> None:
        """The stream of ``session`` ended: tell the session manager."""
        sid = self._sid_of.get(session)
        if sid is None:
            return
        entry = self._forget(sid)
        if entry is not None and self.session_id is not None:
            self.send_frame({"t": "unbind", "sid": sid, "given": entry.given})

    def receive(self, session: IClientSession, stanza: domish.Element) -> None:
        """A stanza from a bound client: over the link (queued while it is down)."""
        sid = self._sid_of.get(session)
        if sid is None:
            return
        if self.outbox.full:
            self._log.warn("link to the session manager: {count} frames unacknowledged; refusing "
                           "a client's stanzas", count=len(self.outbox.frames))
            session.close("resource-constraint", "The server is overloaded")
            return
        self.send_frame({"t": "recv", "sid": sid}, stanza)

    def replace_handle(self, old: IClientSession, new: IClientSession) -> bool:
        """Stream resumption (XEP-0198) is local: the session manager keeps its handle."""
        sid = self._sid_of.pop(old, None)
        if sid is None:
            return False
        entry = self._sessions[sid]
        entry.handle = new
        self._sid_of[new] = sid
        return True

    def route(self, stanza: domish.Element) -> None:
        """A stanza c2s produced for a session (an IQ error for an unacknowledged request)."""
        self._send_bounce("route", stanza)

    def redeliver(self, stanza: domish.Element) -> None:
        """A message a session never acknowledged: the session manager delivers it again."""
        self._send_bounce("redeliver", stanza)

    def _send_bounce(self, kind: str, stanza: domish.Element | str) -> None:
        # Kept while the link is down, even without a link session: the next one takes them.
        if len(self.outbox.frames) >= 2 * self.outbox.limit:
            self._log.error("link to the session manager: queue full; a {kind} stanza is dropped", kind=kind)
            return
        self.send_frame({"t": kind}, stanza)

    def handed_over(self) -> defer.Deferred:
        """Fires once the session manager has every stanza passed to it so far (for XEP-0198
        ``<a/>``: a client's stanza counts as handled only when it is safe in the SM process)."""
        return self.outbox.barrier()

    # -- requests ------------------------------------------------------------------------
    def request(self, op: str, fields: dict[str, Any], stanza: domish.Element | None = None,
                ) -> "defer.Deferred[tuple[dict[str, Any], domish.Element | None]]":
        """Send a request; fires with the response ``(header, stanza)``.

        Fails with ``LinkUnavailable`` after ``request_timeout_s`` or when the link
        session is lost first.
        """
        if self.session_id is None:
            return defer.fail(LinkUnavailable("no session manager is connected"))
        rid = self._new_id()
        d: defer.Deferred = defer.Deferred()
        timer = self.clock.callLater(self.config.request_timeout_s, self._request_expired, rid)
        self._requests[rid] = (d, timer)
        header = {"t": "req", "op": op, "id": rid}
        header.update(fields)
        self.send_frame(header, stanza)
        return d

    def _request_expired(self, rid: int) -> None:
        pending = self._requests.pop(rid, None)
        if pending is not None:
            self._log.warn("link: no answer from the session manager within {seconds}s",
                           seconds=self.config.request_timeout_s)
            pending[0].errback(LinkUnavailable("the session manager did not answer in time"))

    def _fail_requests(self) -> None:
        requests, self._requests = self._requests, {}
        for d, timer in requests.values():
            if timer.active():
                timer.cancel()
            d.errback(LinkUnavailable("the link session was lost"))

    def add_grant(self, username: str, domain: str, grant: str) -> None:
        """Keep the bind grant the SM issued for a successful authentication of this account."""
        grants = self._grants.setdefault((username, domain), collections.deque())
        grants.append(grant)
        while len(grants) > _MAX_GRANTS_PER_ACCOUNT:
            grants.popleft()

    # -- frames from the session manager ---------------------------------------------------
    def handle_frame(self, header: dict[str, Any], stanza: domish.Element | None) -> None:
        kind = header["t"]
        if kind == "send":
            if stanza is not None:
                self._deliver(header["sid"], stanza)
        elif kind == "res":
            pending = self._requests.pop(header["id"], None)
            if pending is not None:
                d, timer = pending
                if timer.active():
                    timer.cancel()
                d.callback((header, stanza))
        elif kind == "close":
            entry = self._sessions.get(header["sid"])
            if entry is not None:
                entry.handle.close(header.get("condition") or "undefined-condition", header.get("text"))
        elif kind == "features":
            self._take_features(header)
        elif kind == "bye":
            self._log.info("the session manager is shutting down")
            self.send_ack()   # it waits for this before it closes the link
            self.abandon("the session manager shut down")
        else:
            self._log.warn("link: unknown frame type {type} from the session manager", type=kind)

    def _deliver(self, sid: int, stanza: domish.Element) -> None:
        entry = self._sessions.get(sid)
        if entry is None:
            return   # the session ended meanwhile; the SM re-delivers what it was not given
        entry.given += 1
        handle = entry.handle
        handle.send(stanza)
        acks = getattr(handle, "acks", None)
        if acks is not None and needs_settling(stanza) and self._sessions.get(sid) is entry:
            if getattr(acks, "on_ack", None) is None:
                acks.on_ack = lambda state, sid=sid: self._acked(sid, state)
            entry.markers.append((entry.given, acks.sent))
        self._settle_soon(entry)

    def _acked(self, sid: int, acks: Any) -> None:
        entry = self._sessions.get(sid)
        if entry is None:
            return
        markers = entry.markers
        acked = acks.acked
        while markers and (acked - markers[0][1]) % _MODULUS < _MODULUS // 2:
            markers.popleft()
        self._settle_soon(entry)

    def _settle_soon(self, entry: _Session) -> None:
        self._settle_dirty.add(entry.sid)
        if self._settle_timer is None:
            self._settle_timer = self.clock.callLater(_SETTLE_DELAY_S, self._send_settles)

    def _send_settles(self) -> None:
        self._settle_timer = None
        dirty, self._settle_dirty = self._settle_dirty, set()
        out = []
        for sid in dirty:
            entry = self._sessions.get(sid)
            if entry is None:
                continue
            upto = entry.markers[0][0] - 1 if entry.markers else entry.given
            if upto > entry.reported:
                entry.reported = upto
                out.append([sid, upto])
        if out and self.session_id is not None:
            self.send_frame({"t": "settle", "s": out})

    def _take_features(self, header: dict[str, Any]) -> None:
        features: dict[str, dict[str, list[domish.Element]]] = {}
        for domain, stages in header.get("features", {}).items():
            features[domain] = {stage: [parse_stanza(xml) for xml in stages.get(stage, [])]
                                for stage in ("pre", "post")}
        self._features = features
        self.mechanism_table = {d: dict(table) for d, table in header.get("mechanisms", {}).items()}
        domains = header.get("domains")
        if domains:
            self._sm_domains = frozenset(domains)
        if domains and set(domains) != set(self.domains):
            self._log.warn("the session manager hosts {theirs}, this process is configured for {ours}",
                           theirs=sorted(domains), ours=sorted(self.domains))

    def _forget(self, sid: int) -> _Session | None:
        entry = self._sessions.pop(sid, None)
        if entry is not None:
            if self._sid_of.get(entry.handle) == sid:
                del self._sid_of[entry.handle]
        return entry

    # -- link session life cycle -----------------------------------------------------------
    def session_started(self, salvaged: list[bytes]) -> None:
        """A session manager connected with a new link session: resend what was salvaged."""
        for frame in salvaged:
            self.outbox.add(frame)
            if self.protocol is not None:
                self.protocol.sendString(frame)

    def session_lost(self, unacked: list[bytes]) -> None:
        """The session manager lost our sessions: end every client stream, keep what must not be lost.

        Messages clients sent that the SM never acknowledged go out again in the next
        link session as ``route`` frames (their senders' sessions are gone, the messages
        are not); the streams' own unacknowledged stanzas are re-delivered the same way.
        """
        self._fail_requests()
        self._sessions.clear()
        self._sid_of.clear()
        self._grants.clear()
        self._settle_dirty.clear()
        if self._settle_timer is not None and self._settle_timer.active():
            self._settle_timer.cancel()
        self._settle_timer = None
        for header, xml in frames_with_stanzas(unacked):
            if xml is None:
                continue
            if header["t"] in ("route", "redeliver") or (header["t"] == "recv" and xml.startswith("<message")):
                self._send_bounce("redeliver" if header["t"] == "redeliver" else "route", xml)
        for stream in list(self.connections):
            stream.close("system-shutdown", "The session manager is not available")
        if self.resumption is not None:
            self.resumption.close_all()

    def link_down_too_long(self) -> None:
        """Nothing more: ``session_lost`` closed the streams."""

    def drain(self, timeout: float) -> defer.Deferred:
        """Fires when the SM has everything sent so far, or after ``timeout`` seconds (shutdown)."""
        if not self.connected:
            return defer.succeed(None)
        done: defer.Deferred = defer.Deferred()
        barrier = self.outbox.barrier()
        timer = self.clock.callLater(timeout, lambda: done.called or done.callback(None))

        def finished(_: Any) -> None:
            if timer.active():
                timer.cancel()
            if not done.called:
                done.callback(None)

        barrier.addBoth(finished)
        return done


@implementer(IAuthenticationService)
class RemoteAuthentication:
    """``IAuthenticationService`` whose exchanges run in the session-manager process.

    The mechanisms to offer come from the table the session manager pushed (so the
    stream features need no round trip); each exchange's steps are requests.
    """

    def __init__(self, link: RemoteSessionManager) -> None:
        self.link = link

    def mechanisms(self, context: SaslContext) -> list[str]:
        """The mechanisms the session manager offers on a connection like ``context``."""
        types = context.channel_binding.types if context.channel_binding is not None else ()
        table = self.link.mechanism_table.get(context.domain, {})
        return list(table.get(mechanism_key(context.secure, types), ()))

    def start(self, mechanism: str, context: SaslContext) -> ISaslExchange:
        """Begin a relayed exchange; ``invalid-mechanism`` for one not offered."""
        if mechanism not in self.mechanisms(context):
            raise SaslFailure("invalid-mechanism")
        return RemoteSaslExchange(self.link, mechanism, context)


@implementer(ISaslExchange)
class RemoteSaslExchange:
    """One SASL exchange whose every step is checked in the session-manager process."""

    _log = Logger()

    def __init__(self, link: RemoteSessionManager, mechanism: str, context: SaslContext) -> None:
        self.link = link
        self.mechanism = mechanism
        self.context = context
        self.xid: int | None = None

    def step(self, response: bytes | None) -> defer.Deferred:
        """Relay one client response; fires with a challenge or success, fails with ``SaslFailure``."""
        data = None if response is None else b64(response)
        if self.xid is None:
            self.xid = self.link._new_id()
            context = self.context
            binding = context.channel_binding
            fields = {"xid": self.xid, "mechanism": self.mechanism, "domain": context.domain,
                      "secure": context.secure, "peer": context.peer, "data": data,
                      "cb": {k: b64(v) for k, v in binding.data.items()} if binding is not None else None}
            d = self.link.request("sasl", fields)
        else:
            d = self.link.request("sasl-step", {"xid": self.xid, "data": data})
        return d.addCallbacks(self._answered, self._failed)

    def _answered(self, result: tuple[dict[str, Any], Any]) -> Any:
        header = result[0]
        outcome = header.get("r")
        data = header.get("data")
        payload = unb64(data) if data is not None else None
        if outcome == "challenge":
            return SaslChallenge(payload or b"")
        if outcome == "success":
            username = header["user"]
            self.link.add_grant(username, self.context.domain, header.get("grant", ""))
            return SaslSuccess(username, payload)
        raise SaslFailure(str(header.get("condition") or "not-authorized"), header.get("text"))

    def _failed(self, failure: Failure) -> None:
        if failure.check(SaslFailure):
            raise failure.value
        self._log.warn("SASL relay failed: {error}", error=failure.getErrorMessage())
        raise SaslFailure("temporary-auth-failure")


class _Unavailable(protocol.Protocol):
    """Turns a client away while no session manager is connected: a clean stream error."""

    def __init__(self, domain: str) -> None:
        self.domain = domain

    def connectionMade(self) -> None:
        header = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                  "xmlns:stream='http://etherx.jabber.org/streams' "
                  f"from='{self.domain}' version='1.0'>")
        error = stream_error("system-shutdown", "The server is not available; try again later")
        self.transport.write(header.encode() + error.toXml(prefixes={ns.STREAMS: "stream"}).encode()
                             + b"</stream:stream>")
        self.transport.loseConnection()


class LinkedClientStreamFactory(ClientStreamFactory):
    """A c2s factory of a connection-manager process: turns clients away without a link session."""

    def __init__(self, *args: Any, link: RemoteSessionManager, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.link = link

    def buildProtocol(self, addr: Any) -> Any:
        if not self.link.serving:
            return _Unavailable(self.default_domain)
        return super().buildProtocol(addr)


class LinkListenerFactory(protocol.Factory):
    """Accepts the session manager's link connections (one link session at a time)."""

    noisy = False

    def __init__(self, link: RemoteSessionManager, settings: LinkSettings) -> None:
        self.link = link
        self.settings = settings

    def buildProtocol(self, addr: Any) -> LinkProtocol:
        return LinkProtocol(False, self.settings, self.link.clock, self.link)
