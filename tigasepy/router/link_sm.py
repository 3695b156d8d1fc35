"""The session manager's end of the link: sessions whose streams live in connection-manager processes.

The session-manager process (``[server] roles`` with ``sm``) dials *out* to every
connection manager in ``[link] connect`` (it opens no listening port for them), with a
jittered, capped exponential back-off between attempts. For each bound client the SM
holds a ``RemoteClientSession``: an ``IClientSession`` whose ``send``/``close`` become
frames to the connection manager that owns the stream.

Requests from a connection manager are answered here, where the credentials are:
SASL exchanges run against the real ``IAuthenticationService`` (with the channel
binding the connection manager saw, so ``-PLUS`` mechanisms work) and a success hands
out a one-time *grant* that the bind of that account must present, so a connection
manager cannot bind sessions for accounts that did not authenticate through it.

Nothing a client should get is lost when a connection-manager process dies: messages
and IQ requests written to a session stay *unsettled* here until the connection manager
reports them acknowledged by the client (XEP-0198) or written (clients without it).
When the link session is lost (grace period over, or the connection manager came back
as a new process), its sessions are unbound (unavailable is broadcast) and unsettled
stanzas are re-delivered (another resource or offline storage) or bounced, by the
XEP-0198 rules.
"""

from __future__ import annotations

import collections
import itertools
import random
import secrets
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.jid import InvalidFormat
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.c2s.stream_management import bounce_unacked
from tigasepy.config import Config, LinkConfig
from tigasepy.interfaces import (
    ChannelBinding, IAuthenticationService, IClientSession, SaslChallenge, SaslContext, SaslFailure,
    SaslSuccess,
)
from tigasepy.log_level import Logger
from tigasepy.router.link import LinkProtocol, LinkSession, LinkSettings, b64, needs_settling, unb64
from tigasepy.router.link_cm import mechanism_key
from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.jid import domain_of
from tigasepy.xmpp.serialize import to_xml

#: The TLS channel-binding types a connection may offer (RFC 9266, RFC 5929).
BINDING_TYPES = ("tls-exporter", "tls-server-end-point", "tls-unique")
_MAX_EXCHANGES = 10000
_MAX_GRANTS = 10000
_GRANT_TTL_S = 600
_MAX_UNSETTLED = 5000


def snapshot(sm: Any, auth: IAuthenticationService, domains: tuple[str, ...]) -> dict[str, Any]:
    """The ``features`` frame: stream features and the SASL mechanism table of every domain.

    c2s asks for features and mechanisms while it writes ``<stream:features/>``; in a
    connection-manager process it reads them from this table instead of waiting for a
    round trip. Mechanisms depend on the domain, on TLS and on the channel-binding types
    the connection offers, so the table has a line per combination.
    """
    features: dict[str, Any] = {}
    mechanisms: dict[str, Any] = {}
    for domain in domains:
        features[domain] = {"pre": [to_xml(e) for e in sm.features_for(domain, False)],
                            "post": [to_xml(e) for e in sm.features_for(domain, True)]}
        table = {mechanism_key(False, ()): list(auth.mechanisms(SaslContext(domain=domain, secure=False)))}
        for size in range(len(BINDING_TYPES) + 1):
            for combo in itertools.combinations(BINDING_TYPES, size):
                binding = ChannelBinding({kind: b"" for kind in combo}) if combo else None
                context = SaslContext(domain=domain, secure=True, channel_binding=binding)
                table[mechanism_key(True, combo)] = list(auth.mechanisms(context))
        mechanisms[domain] = table
    return {"t": "features", "domains": list(domains), "features": features, "mechanisms": mechanisms}


@implementer(IClientSession)
class RemoteClientSession:
    """The SM's handle for a client stream in a connection-manager process."""

    __slots__ = ("peer", "sid", "jid", "secure", "sent", "unsettled", "ended", "__weakref__")

    def __init__(self, peer: "ConnectionManagerPeer", sid: int, secure: bool) -> None:
        self.peer = peer
        self.sid = sid
        self.jid: Any = None
        self.secure = secure
        self.sent = 0
        #: ``(index, xml, first_sent)`` of stanzas not yet acknowledged by the client.
        self.unsettled: collections.deque[tuple[int, str, float]] = collections.deque()
        self.ended = False

    def send(self, stanza: domish.Element) -> None:
        """Write ``stanza`` to the client, through its connection manager."""
        self.peer.send_to_client(self, stanza)

    def close(self, condition: str, text: str | None = None) -> None:
        """End the client's stream with a stream error."""
        self.peer.close_client(self, condition, text)

    def __repr__(self) -> str:
        jid = self.jid.full() if self.jid is not None else "?"
        return f"<RemoteClientSession {jid} via {self.peer.name} sid={self.sid}>"


class _DialFactory(protocol.Factory):
    noisy = False

    def __init__(self, peer: "ConnectionManagerPeer") -> None:
        self.peer = peer

    def buildProtocol(self, addr: Any) -> LinkProtocol:
        proto = LinkProtocol(True, self.peer.settings, self.peer.clock, self.peer, name=self.peer.name)
        proto.on_lost = self.peer._connection_ended
        return proto


class ConnectionManagerPeer(LinkSession):
    """The link to one connection-manager process: dialing, its sessions, its requests.

    Args:
        address: ``host:port`` of the connection manager's link listener.
        sm: the session manager.
        auth: the authentication service (credentials are checked here).
        config: the ``[link]`` section.
        clock: time and timers.
        settings: secret and channel binding for ``LinkProtocol``.
        connect: ``connect(factory)`` opens one TLS connection to ``address`` (a Deferred).
        domains: the hosted domains (for the features table).
        rng: the randomness of the back-off jitter.
    """

    _log = Logger()

    def __init__(self, address: str, sm: Any, auth: IAuthenticationService, config: LinkConfig,
                 clock: IReactorTime, settings: LinkSettings, connect: Callable[[Any], defer.Deferred],
                 domains: tuple[str, ...], rng: random.Random | None = None) -> None:
        super().__init__(config, clock, address)
        self.address = address
        self.sm = sm
        self.auth = auth
        self.settings = settings
        self._connect = connect
        self.domains = domains
        self._rng = rng or random.Random()
        self._delay = config.reconnect_min_s
        self._retry: Any = None
        self._dialing = False
        self._stopped = True
        self._sessions: dict[int, RemoteClientSession] = {}
        self._exchanges: collections.OrderedDict[int, tuple[Any, SaslContext, float]] = collections.OrderedDict()
        self._grants: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()
        self._full_warned = False

    # -- dialing ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start connecting (and reconnecting for as long as this peer runs)."""
        self._stopped = False
        self._dial()

    def stop(self, timeout: float = 2.0) -> defer.Deferred:
        """Say goodbye to the connection manager and end the link session (shutdown).

        Waits (at most ``timeout`` seconds) for the connection manager to acknowledge the
        goodbye, so that it closes its clients' streams at once instead of after the grace
        period. Fires when the link session is over.
        """
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if not self.connected:
            self.abandon("the session manager is stopping")
            return defer.succeed(None)
        self.send_frame({"t": "bye"})
        done: defer.Deferred = defer.Deferred()
        timer = self.clock.callLater(timeout, lambda: done.called or done.callback(None))

        def acknowledged(_: Any) -> None:
            if timer.active():
                timer.cancel()
            if not done.called:
                done.callback(None)

        self.outbox.barrier().addCallback(acknowledged)
        done.addCallback(lambda _: self.abandon("the session manager is stopping"))
        return done

    def _dial(self) -> None:
        self._retry = None
        if self._stopped or self._dialing or self.connected:
            return
        self._dialing = True
        try:
            d = self._connect(_DialFactory(self))
        except Exception:
            d = defer.fail()
        d.addCallbacks(self._dialed, self._dial_failed)

    def _dialed(self, proto: Any) -> None:
        self._dialing = True  # until the connection ends (``_connection_ended``)

    def _dial_failed(self, failure: Failure) -> None:
        self._dialing = False
        self._log.info("link {name}: cannot connect ({error})", name=self.name, error=failure.getErrorMessage())
        self._schedule()

    def _connection_ended(self) -> None:
        self._dialing = False
        self._schedule()

    def _schedule(self) -> None:
        if self._stopped or self._retry is not None:
            return
        delay = self._delay
        self._delay = min(self.config.reconnect_max_s, self._delay * 2)
        wait = self._rng.uniform(delay / 2, delay)
        self._retry = self.clock.callLater(wait, self._dial)

    def attach(self, proto: LinkProtocol, session_id: str, resumed: bool, peer_h: int) -> bool:
        ok = super().attach(proto, session_id, resumed, peer_h)
        if ok:
            self._delay = self.config.reconnect_min_s
        return ok

    def reconfigure(self, config: LinkConfig) -> None:
        super().reconfigure(config)
        self._delay = min(self._delay, config.reconnect_max_s)

    # -- toward the connection manager -----------------------------------------------------
    def send_to_client(self, handle: RemoteClientSession, stanza: domish.Element) -> None:
        """Write ``stanza`` to the client of ``handle``; kept unsettled if it must not be lost."""
        if handle.ended or self.session_id is None:
            return
        if self.outbox.full and self._overloaded():
            return
        handle.sent += 1
        if needs_settling(stanza):
            xml = to_xml(stanza)
            unsettled = handle.unsettled
            unsettled.append((handle.sent, xml, self.clock.seconds()))
            if len(unsettled) > _MAX_UNSETTLED:
                unsettled.popleft()
            self.send_frame({"t": "send", "sid": handle.sid}, xml)
        else:
            self.send_frame({"t": "send", "sid": handle.sid}, stanza)

    def close_client(self, handle: RemoteClientSession, condition: str, text: str | None) -> None:
        """End the stream of ``handle`` with a stream error."""
        if handle.ended or self.session_id is None:
            return
        self.send_frame({"t": "close", "sid": handle.sid, "condition": condition, "text": text})

    def _overloaded(self) -> bool:
        """The outbox is full: give up the link session if the peer is away or far behind."""
        if not self.connected or len(self.outbox.frames) >= 2 * self.outbox.limit:
            self._log.error("link {name}: {count} frames unacknowledged; ending the link session",
                            name=self.name, count=len(self.outbox.frames))
            self.abandon("too many unacknowledged frames")
            return True
        if not self._full_warned:
            self._full_warned = True
            self._log.warn("link {name}: over {limit} frames unacknowledged", name=self.name,
                           limit=self.outbox.limit)
        return False

    def send_features(self) -> None:
        """Push the stream features and mechanism table (at link start and after a reload)."""
        if self.session_id is not None:
            # The SM's domains now (virtual hosts can be added by a reload).
            self.send_frame(snapshot(self.sm, self.auth, tuple(getattr(self.sm, "domains", self.domains))))

    # -- link session life cycle ---------------------------------------------------------
    def session_started(self, salvaged: list[bytes]) -> None:
        """A new link session: tell the connection manager what to offer (old frames are void)."""
        self._full_warned = False
        self.send_features()

    def session_lost(self, unacked: list[bytes]) -> None:
        """The connection manager's sessions are gone: unbind them, re-deliver what they missed."""
        sessions, self._sessions = self._sessions, {}
        self._exchanges.clear()
        self._grants.clear()
        for handle in sessions.values():
            handle.ended = True
        if sessions:
            self._log.warn("link {name}: ending {count} sessions of the lost connection manager",
                           name=self.name, count=len(sessions))
        for handle in sessions.values():
            self.sm.unbind(handle)
        for handle in sessions.values():
            self._bounce(handle, 0)

    def _bounce(self, handle: RemoteClientSession, given: int) -> None:
        """Re-deliver or bounce the unsettled stanzas of ``handle`` after the ``given``-th."""
        queue = [(xml, first) for index, xml, first in handle.unsettled if index > given]
        handle.unsettled.clear()
        if queue and handle.jid is not None:
            bounce_unacked(self.sm, handle.jid, queue, self._log)

    # -- frames from the connection manager -------------------------------------------------
    def handle_frame(self, header: dict[str, Any], stanza: domish.Element | None) -> None:
        kind = header["t"]
        if kind == "recv":
            handle = self._sessions.get(header["sid"])
            if handle is not None and stanza is not None:
                stanza.attributes["from"] = handle.jid.full()   # never trust the relay for it
                self.sm.receive(handle, stanza)
        elif kind == "settle":
            for sid, upto in header["s"]:
                handle = self._sessions.get(sid)
                if handle is not None:
                    unsettled = handle.unsettled
                    while unsettled and unsettled[0][0] <= upto:
                        unsettled.popleft()
        elif kind == "req":
            self._request(header, stanza)
        elif kind == "unbind":
            handle = self._sessions.pop(header["sid"], None)
            if handle is not None:
                handle.ended = True
                self.sm.unbind(handle)
                self._bounce(handle, int(header.get("given", 0)))
        elif kind == "route":
            if stanza is not None and self._from_local(stanza):
                self.sm.route(stanza)
        elif kind == "redeliver":
            if stanza is not None and stanza.name == "message":
                self.sm.redeliver(stanza)
        else:
            self._log.warn("link {name}: unknown frame type {type}", name=self.name, type=kind)

    def _from_local(self, stanza: domish.Element) -> bool:
        sender = stanza.getAttribute("from")
        if sender and self.sm.is_local_domain(domain_of(sender).lower()):
            return True
        self._log.warn("link {name}: dropped a routed stanza not from a local address", name=self.name)
        return False

    def _respond(self, rid: Any, fields: dict[str, Any], stanza: domish.Element | None = None) -> None:
        if self.session_id is None:
            return
        header = {"t": "res", "id": rid}
        header.update(fields)
        self.send_frame(header, stanza)

    def _request(self, header: dict[str, Any], stanza: domish.Element | None) -> None:
        rid = header["id"]
        op = header.get("op")
        if op == "bind":
            self._bind(rid, header)
        elif op == "sasl":
            self._sasl_start(rid, header)
        elif op == "sasl-step":
            self._sasl_step(rid, header["xid"], header.get("data"))
        elif op == "uiq":
            if stanza is None:
                raise ValueError("uiq without a stanza")
            d = defer.maybeDeferred(self.sm.unauthenticated_iq, header["domain"], stanza)
            d.addCallback(lambda reply: self._respond(rid, {}, reply))
            d.addErrback(self._request_failed, rid)
        else:
            self._respond(rid, {"error": "unknown-request"})

    def _request_failed(self, failure: Failure, rid: Any) -> None:
        self._log.failure("link {name}: a request failed", failure, name=self.name)
        self._respond(rid, {"condition": "internal-server-error"})

    # -- bind ------------------------------------------------------------------------------
    def _bind(self, rid: Any, header: dict[str, Any]) -> None:
        sid, user, domain = header["sid"], header["user"], header["domain"]
        grant = self._grants.get(header.get("grant") or "")
        if grant is None or grant[0] != f"{user}@{domain}" or grant[1] < self.clock.seconds():
            self._log.warn("link {name}: bind for {user}@{domain} without a valid grant; refused",
                           name=self.name, user=user, domain=domain)
            self._respond(rid, {"condition": "not-authorized", "text": "Authenticate first"})
            return
        if not isinstance(sid, int) or sid in self._sessions:
            raise ValueError("bad session id")
        handle = RemoteClientSession(self, sid, bool(header.get("secure")))
        self._sessions[sid] = handle
        try:
            jid = self.sm.bind(handle, user, domain, header.get("resource") or None)
        except StanzaError as e:
            del self._sessions[sid]
            self._respond(rid, {"condition": e.condition, "text": e.text})
            return
        except InvalidFormat:
            del self._sessions[sid]
            self._respond(rid, {"condition": "bad-request"})
            return
        del self._grants[header["grant"]]
        handle.jid = jid
        self._respond(rid, {"jid": jid.full()})

    # -- SASL ------------------------------------------------------------------------------
    def _sasl_start(self, rid: Any, header: dict[str, Any]) -> None:
        cb = header.get("cb")
        binding = ChannelBinding({str(k): unb64(v) for k, v in cb.items()}) if cb else None
        context = SaslContext(domain=str(header["domain"]), secure=bool(header["secure"]),
                              channel_binding=binding, peer=str(header.get("peer") or ""))
        try:
            exchange = self.auth.start(str(header["mechanism"]), context)
        except SaslFailure as failure:
            self._respond(rid, {"r": "failure", "condition": failure.condition, "text": failure.text})
            return
        now = self.clock.seconds()
        exchanges = self._exchanges
        expiry = now - 2 * self.config.request_timeout_s - 60
        while exchanges and (len(exchanges) >= _MAX_EXCHANGES or next(iter(exchanges.values()))[2] < expiry):
            exchanges.popitem(last=False)
        exchanges[header["xid"]] = (exchange, context, now)
        self._sasl_step(rid, header["xid"], header.get("data"))

    def _sasl_step(self, rid: Any, xid: Any, data: Any) -> None:
        entry = self._exchanges.get(xid)
        if entry is None:
            self._respond(rid, {"r": "failure", "condition": "temporary-auth-failure"})
            return
        exchange, context, _ = entry
        response = None if data is None else unb64(data)
        d = defer.maybeDeferred(exchange.step, response)
        d.addCallbacks(self._sasl_result, self._sasl_error, callbackArgs=(rid, xid, context),
                       errbackArgs=(rid, xid))

    def _sasl_result(self, result: Any, rid: Any, xid: Any, context: SaslContext) -> None:
        data = getattr(result, "data", None)
        encoded = None if data is None else b64(data)
        if isinstance(result, SaslChallenge):
            self._respond(rid, {"r": "challenge", "data": encoded})
            return
        self._exchanges.pop(xid, None)
        if not isinstance(result, SaslSuccess):
            self._respond(rid, {"r": "failure", "condition": "temporary-auth-failure"})
            return
        grant = secrets.token_urlsafe(18)
        grants = self._grants
        while len(grants) >= _MAX_GRANTS:
            grants.popitem(last=False)
        grants[grant] = (f"{result.username}@{context.domain}", self.clock.seconds() + _GRANT_TTL_S)
        self._respond(rid, {"r": "success", "user": result.username, "data": encoded, "grant": grant})

    def _sasl_error(self, failure: Failure, rid: Any, xid: Any) -> None:
        self._exchanges.pop(xid, None)
        if failure.check(SaslFailure):
            error = failure.value
            self._respond(rid, {"r": "failure", "condition": error.condition, "text": error.text})
            return
        self._log.failure("link {name}: SASL exchange failed unexpectedly", failure, name=self.name)
        self._respond(rid, {"r": "failure", "condition": "temporary-auth-failure"})

    # -- introspection -----------------------------------------------------------------------
    def session_count(self) -> int:
        """How many sessions are bound through this connection manager."""
        return len(self._sessions)


class SessionManagerLinks(service.Service):
    """The session manager's links to every connection manager of ``[link] connect``.

    Args:
        config: the whole configuration.
        sm: the session manager.
        auth: the authentication service.
        clock: time and timers.
        settings: secret and channel binding.
        connector: ``connector(address)`` returns the ``connect(factory)`` function for one
            connection manager (TLS over TCP in production).
    """

    _log = Logger()

    def __init__(self, config: Config, sm: Any, auth: IAuthenticationService, clock: IReactorTime,
                 settings: LinkSettings, connector: Callable[[str], Callable[[Any], defer.Deferred]]) -> None:
        self.setName("link")
        self.config = config
        self.sm = sm
        self.auth = auth
        self.clock = clock
        self.settings = settings
        self.connector = connector
        self.peers: dict[str, ConnectionManagerPeer] = {}
        for address in config.link.connect:
            self.peers[address] = self._peer(address)

    def _peer(self, address: str) -> ConnectionManagerPeer:
        return ConnectionManagerPeer(address, self.sm, self.auth, self.config.link, self.clock, self.settings,
                                     self.connector(address), self.config.server.domains)

    def startService(self) -> None:
        super().startService()
        for peer in self.peers.values():
            peer.start()

    def stopService(self) -> Any:
        super().stopService()
        return defer.DeferredList([peer.stop() for peer in self.peers.values()])

    def reconfigure(self, config: Config) -> list[str]:
        """Apply a new ``[link]``: connect to added connection managers, leave removed ones.

        Returns what changed, for the reload report.
        """
        changes = []
        old = set(self.peers)
        new = set(config.link.connect)
        self.config = config
        self.settings.config = config.link
        for address in sorted(old - new):
            self.peers.pop(address).stop()   # (fires once the connection manager said goodbye)
            changes.append(f"link: no longer connecting to {address}")
        for peer in self.peers.values():
            peer.reconfigure(config.link)
        for address in sorted(new - old):
            peer = self.peers[address] = self._peer(address)
            if self.running:
                peer.start()
            changes.append(f"link: connecting to {address}")
        return changes

    def push_features(self) -> None:
        """Tell every connection manager the current stream features and mechanisms."""
        for peer in self.peers.values():
            peer.send_features()

    def session_count(self) -> int:
        """Sessions bound through every connection manager."""
        return sum(peer.session_count() for peer in self.peers.values())
