"""The federation service: the router's default route, and the owner of every s2s stream.

``S2SService`` is the ``IComponent`` the router hands stanzas for other domains to
(``receive``). It sends each over, in order of preference: the authenticated outgoing
route of its (local, remote) domain pair; an incoming stream the peer made
bidirectional (XEP-0288) and authenticated for the pair; a new ``OutgoingRoute``, which
queues it while it connects. Stanzas from authenticated peers go to the router
(``inbound``), which hands local domains to the session manager.

It is also the authority on dialback keys for our domains (``dialback_key``,
``check_dialback_key``, with the secret from ``[s2s] dialback_secret_file``) and the
place that sends verification requests for streams we received (``verify_dialback``).

Limits: incoming connections per peer address (``max_connections_per_peer``), streams
not yet authenticated (``max_unauthenticated``), stanzas queued per domain pair
(``max_queued_stanzas``). Every timer is owned by a stream or a route and cancelled
with it; ``stopService`` closes everything and bounces what is still queued.
"""

from __future__ import annotations

import collections
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.config import S2SConfig
from tigasepy.interfaces import IComponent, IRouter
from tigasepy.log_level import Logger
from tigasepy.s2s import dialback
from tigasepy.s2s.certificates import S2STLS
from tigasepy.s2s.outgoing import OutgoingRoute, Verification, _State
from tigasepy.s2s.resolver import Resolver, Target
from tigasepy.s2s.stream import ServerStream, addresses

ConnectFn = Callable[[str, str, Target, Any], defer.Deferred]


@implementer(IComponent)
class S2SService(service.Service):
    """Server-to-server federation for one server.

    Args:
        config: the ``[s2s]`` section.
        router: where inbound stanzas go and bounces are sent from.
        clock: the reactor (time, timers and, by default, outgoing connections).
        secret: the dialback secret of our domains.
        tls: the s2s TLS contexts, or None when TLS is not available (lab setups only).
        resolver: finds the targets of remote domains.
        is_local: whether a domain is served here (hosted or a component); by default
            whether the router has a route of its own for it.
        default_domain: the domain named in a stream header written only to carry an error.
        connect: ``connect(local_domain, remote_domain, target, factory)`` returning a
            Deferred that fires with the connected protocol; by default TCP (direct TLS
            for ``target.direct_tls``) on ``clock``. Tests replace it.
    """

    _log = Logger()
    #: IComponent: the default route answers for every domain not served here.
    domain = "*"

    def __init__(self, config: S2SConfig, router: IRouter, clock: Any, secret: bytes, tls: S2STLS | None,
                 resolver: Resolver, is_local: Callable[[str], bool] | None = None, default_domain: str = "",
                 connect: ConnectFn | None = None) -> None:
        self.setName("s2s")
        self.config = config
        self.router = router
        self.clock = clock
        self._secret = secret
        self.tls = tls
        self.resolver = resolver
        self.is_local = is_local if is_local is not None else router.serves  # type: ignore[attr-defined]
        self.default_domain = default_domain
        self.connect = connect if connect is not None else self._connect_tcp
        self.routes: dict[tuple[str, str], OutgoingRoute] = {}
        self.incoming: set[ServerStream] = set()
        self.unauthenticated = 0
        self._bidi: dict[tuple[str, str], Any] = {}
        self._per_peer: collections.Counter[str] = collections.Counter()
        self._stopping = False

    # -- IComponent: stanzas for other servers ------------------------------------------
    def receive(self, stanza: domish.Element) -> None:
        """Send ``stanza`` (from a local domain) to the server of its ``to`` domain."""
        pair = addresses(stanza)
        if pair is None:
            self._log.debug("s2s: dropping a {kind} without from/to", kind=stanza.name)
            return
        local, remote = pair
        if not self.is_local(local) or self.is_local(remote):
            self._log.info("s2s: dropping a {kind} from {local} to {remote}: not from a domain served here",
                           kind=stanza.name, local=local, remote=remote)
            return
        if self._stopping:
            self.bounce(stanza, "remote-server-timeout")
            return
        self.send(local, remote, stanza)

    def send(self, local: str, remote: str, stanza: domish.Element) -> None:
        """Send ``stanza`` from ``local`` to ``remote`` over the best stream there is."""
        route = self.routes.get((local, remote))
        if route is not None and route.state == _State.READY:
            route.send(stanza)
            return
        bidi = self._bidi.get((local, remote))
        if bidi is not None and bidi.can_send(local, remote):
            bidi.send_stanza(stanza)
            return
        if route is None:
            route = self.routes[(local, remote)] = OutgoingRoute(self, local, remote)
        route.send(stanza)

    def inbound(self, stanza: domish.Element) -> None:
        """A stanza from an authenticated peer, for a domain served here."""
        self.router.route(stanza)

    def bounce(self, stanza: domish.Element, condition: str, text: str | None = None) -> None:
        """Return ``stanza`` to its (local) sender with a stanza error, unless it must not be."""
        self.router.bounce(stanza, condition)  # type: ignore[attr-defined]

    # -- routes -------------------------------------------------------------------------
    def route_closed(self, route: OutgoingRoute) -> None:
        """``route`` is finished: the next stanza for its pair starts a new one."""
        if self.routes.get((route.local, route.remote)) is route:
            del self.routes[(route.local, route.remote)]

    def _connect_tcp(self, local: str, remote: str, target: Target, factory: Any) -> defer.Deferred:
        timeout = self.config.connect_timeout_s
        if isIPAddress(target.host):
            endpoint: Any = endpoints.TCP4ClientEndpoint(self.clock, target.host, target.port, timeout=timeout)
        elif isIPv6Address(target.host):
            endpoint = endpoints.TCP6ClientEndpoint(self.clock, target.host, target.port, timeout=timeout)
        else:
            endpoint = endpoints.HostnameEndpoint(self.clock, target.host, target.port, timeout=timeout)
        if target.direct_tls:
            if self.tls is None:
                return defer.fail(ConnectionError("direct TLS without a certificate"))
            endpoint = endpoints.wrapClientTLS(self.tls.client(remote, direct_tls=True, local=local), endpoint)
        return endpoint.connect(factory)

    # -- XEP-0288 -----------------------------------------------------------------------
    def add_bidi(self, local: str, remote: str, stream: Any) -> None:
        """``stream`` (made bidirectional by the peer) may carry stanzas from ``local`` to ``remote``."""
        self._bidi[(local, remote)] = stream
        route = self.routes.get((local, remote))
        if route is not None and route.state != _State.READY:
            for stanza in route.take_queue():
                stream.send_stanza(stanza)

    def _forget_bidi(self, stream: Any) -> None:
        for pair in [p for p, s in self._bidi.items() if s is stream]:
            del self._bidi[pair]

    # -- incoming stream accounting -------------------------------------------------------
    def incoming_opened(self, stream: Any) -> tuple[str, str] | None:
        """Count a new incoming stream; returns (condition, text) when it must be refused."""
        self.incoming.add(stream)
        self.unauthenticated += 1
        self._per_peer[stream.peer_host] += 1
        if self._stopping:
            return ("system-shutdown", "The server is shutting down")
        if self.unauthenticated > self.config.max_unauthenticated:
            self._log.warn("s2s: too many unauthenticated streams; refusing {peer}", peer=stream.peer_host)
            return ("resource-constraint", "Too many streams being set up")
        if self._per_peer[stream.peer_host] > self.config.max_connections_per_peer:
            self._log.warn("s2s: too many connections from {peer}", peer=stream.peer_host)
            return ("policy-violation", "Too many connections from your address")
        return None

    def incoming_closed(self, stream: Any) -> None:
        """Forget an incoming stream whose connection is gone."""
        if stream in self.incoming:
            self.incoming.discard(stream)
            self._per_peer[stream.peer_host] -= 1
            if self._per_peer[stream.peer_host] <= 0:
                del self._per_peer[stream.peer_host]
        self._forget_bidi(stream)

    def stream_closing(self, stream: Any) -> None:
        """``stream`` takes no more stanzas."""
        self._forget_bidi(stream)

    def stream_closed(self, stream: Any) -> None:
        """``stream``'s connection is gone."""
        self._forget_bidi(stream)

    # -- dialback -----------------------------------------------------------------------
    def dialback_key(self, receiving: str, originating: str, stream_id: str) -> str:
        """Our key for a stream from ``originating`` (ours) to ``receiving`` (XEP-0185)."""
        return dialback.dialback_key(self._secret, receiving, originating, stream_id)

    def check_dialback_key(self, receiving: str, originating: str, stream_id: str, key: str) -> bool:
        """True when ``key`` is the one we gave for that stream (we are the authoritative server)."""
        return dialback.keys_match(self.dialback_key(receiving, originating, stream_id), key)

    def verify_dialback(self, local: str, remote: str, stream_id: str, key: str) -> defer.Deferred:
        """Ask ``remote``'s authoritative server about ``key`` (given on our incoming stream
        ``stream_id``); fires with ``("valid" | "invalid" | "error", condition)``."""
        verification = Verification(local, remote, stream_id, key.strip())
        route = self.routes.get((local, remote))
        if route is None:
            route = self.routes[(local, remote)] = OutgoingRoute(self, local, remote)
        route.verify(verification)
        return verification.deferred

    # -- service life cycle ---------------------------------------------------------------
    def startService(self) -> None:
        self._stopping = False
        super().startService()

    def stopService(self) -> Any:
        """Close every stream (``system-shutdown``) and bounce what is queued."""
        self._stopping = True
        for stream in list(self.incoming):
            stream.close("system-shutdown", "The server is shutting down")
        for route in list(self.routes.values()):
            route.close("system-shutdown", "The server is shutting down")
        self.routes.clear()
        self._bidi.clear()
        return super().stopService()
