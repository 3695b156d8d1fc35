"""The factory for client streams: shared collaborators, connection accounting, shutdown."""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import protocol
from twisted.internet.interfaces import IReactorTime

from tigasepy.c2s.protocol import ClientStream
from tigasepy.c2s.stream_management import ResumptionRegistry
from tigasepy.config import C2SConfig
from tigasepy.interfaces import IAuthenticationService, ISessionManager


class ClientStreamFactory(protocol.Factory):
    """Builds ``ClientStream``s for one listener (STARTTLS or direct TLS).

    Args:
        config: the ``[c2s]`` section (limits and policy).
        sm: the session manager (or the link to it).
        auth: the authentication service SASL exchanges go to.
        clock: the reactor, for timers.
        tls_context: a server TLS context factory, or None when TLS is not available.
        channel_binding: ``channel_binding(transport)`` giving the TLS channel-binding data.
        default_domain: the domain named in stream headers before the client named one.
        direct_tls: True for the XEP-0368 port, where TLS wraps the socket from the start.
        connections: the set of open streams, shared by the listeners of one server.
        resumption: the XEP-0198 registry (tokens, detached sessions), shared by the
            listeners of one server so that a session dropped on one port resumes on
            another; a new one when None.
        handed_over: for a session manager in another process (router/link_cm.py):
            returns a Deferred firing once every stanza passed to ``sm`` so far is safe
            there; a client's ``<r/>`` is answered only then (XEP-0198). None: at once.
    """

    def __init__(self, config: C2SConfig, sm: ISessionManager, auth: IAuthenticationService,
                 clock: IReactorTime, tls_context: Any, channel_binding: Callable[[Any], Any],
                 default_domain: str, direct_tls: bool = False,
                 connections: set[ClientStream] | None = None,
                 resumption: ResumptionRegistry | None = None,
                 handed_over: Callable[[], Any] | None = None) -> None:
        self.config = config
        self.sm = sm
        self.auth = auth
        self.clock = clock
        self.tls_context = tls_context
        self.channel_binding = channel_binding
        self.default_domain = default_domain
        self.direct_tls = direct_tls
        self.connections: set[ClientStream] = connections if connections is not None else set()
        self.unauthenticated = 0
        self.handed_over = handed_over
        self.resumption = resumption if resumption is not None else ResumptionRegistry(
            sm, clock, config.stream_management)

    def reconfigure(self, config: C2SConfig) -> None:
        """New ``[c2s]`` limits: for new streams, and for this factory's open streams where
        they can change mid-stream (stanza size and depth, timeouts, XEP-0198 and CSI)."""
        self.config = config
        self.resumption.config = config.stream_management
        for stream in list(self.connections):
            if stream.factory is self:
                stream.reconfigure(config)

    def buildProtocol(self, addr: Any) -> ClientStream:
        stream = ClientStream(self, direct_tls=self.direct_tls)
        return stream

    def connection_opened(self, stream: ClientStream) -> None:
        """Account for a new stream (it counts as unauthenticated until bound)."""
        self.connections.add(stream)
        self.unauthenticated += 1

    def connection_closed(self, stream: ClientStream) -> None:
        """Forget a stream that ended."""
        self.connections.discard(stream)

    def close_all(self, condition: str = "system-shutdown") -> None:
        """End every open stream of this factory and every detached session (server shutdown)."""
        for stream in list(self.connections):
            stream.close(condition, "The server is shutting down")
        self.resumption.close_all()
