"""Build the server's service tree from a ``Config``: what twistd runs and what embedders use.

``build_service(config, reactor)`` returns a ``TigaseService`` (a ``MultiService``)
holding storage, the router, the session manager with its extensions, the
authentication service and the c2s listeners. Nothing here touches a global reactor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.logger import Logger

from tigasepy.auth.factory import build_authentication
from tigasepy.c2s.factory import ClientStreamFactory
from tigasepy.c2s.stream_management import ResumptionRegistry
from tigasepy.components import components_plan
from tigasepy.components.connector import build_connector
from tigasepy.components.external import ComponentAcceptFactory
from tigasepy.config import Config, ConfigError
from tigasepy.extensions import extensions_for
from tigasepy.router.router import LocalDelivery, Router
from tigasepy.sm.manager import SessionManager
from tigasepy.storage.factory import open_stores
from tigasepy import tls
from tigasepy.storage.outage import log_failure


class ListenerService(service.Service):
    """Listens on one endpoint with one factory; remembers the bound port."""

    _log = Logger()

    def __init__(self, name: str, endpoint: Any, factory: Any) -> None:
        self.setName(name)
        self.endpoint = endpoint
        self.factory = factory
        self.port: Any = None
        self._error: Any = None
        self._waiters: list[defer.Deferred] = []

    def startService(self) -> None:
        super().startService()
        d = self.endpoint.listen(self.factory)
        d.addCallbacks(self._listened, self._failed)

    def _listened(self, port: Any) -> None:
        self.port = port
        address = port.getHost()
        self._log.info("{name} listening on {host}:{port}", name=self.name, host=address.host,
                       port=address.port)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(port)

    def _failed(self, failure: Any) -> None:
        self._log.failure("{name} could not listen", failure, name=self.name)
        self._error = failure
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(failure)

    def when_listening(self) -> defer.Deferred:
        """Fires with the listening port once bound (fails if listening failed)."""
        if self.port is not None:
            return defer.succeed(self.port)
        if self._error is not None:
            return defer.fail(self._error)
        waiter: defer.Deferred = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return defer.maybeDeferred(port.stopListening)
        return None


class TigaseService(service.MultiService):
    """The whole server: storage, router, session manager, authentication and listeners."""

    _log = Logger()

    def __init__(self, config: Config, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.stores = open_stores(config, reactor)
        self.router = Router()
        self.sm = SessionManager(config.server.domains, self.stores, self.router, reactor,
                                 max_resources=config.c2s.max_resources_per_account, config=config)
        for domain in config.server.domains:
            self.router.add_route(domain, LocalDelivery(domain, self.sm))
        self.extension_classes = extensions_for(config)   # [extensions], [hosts] registration
        # [components]: in-process ones, XEP-0114 ones that connect to us, and classes we
        # run as external components of another server (tigasepy/components/__init__.py).
        plan = components_plan(config.components, Path(config.source).parent if config.source else None)
        for domain in plan.domains:
            if self.sm.is_local_domain(domain):
                raise ConfigError(f"{domain} is a hosted domain, not a component domain", ("components",))
        self.components = [cls(domain, comp_config) for cls, domain, comp_config in plan.local]
        self.component_connectors = [
            build_connector(reactor, o.cls, o.domain, o.config, o.host, o.port, o.secret, tls=o.tls,
                            ca_file=o.ca_file) for o in plan.outgoing]
        # Per virtual host, an ordered chain of authenticators ([auth], auth/factory.py).
        self.authentication = build_authentication(config, self.stores, reactor)
        self.authentication.attach(self.sm)
        self.auth = self.authentication.service
        self.tls_context = tls.server_context_for(config)    # [tls]; [hosts."D"] certificates by SNI
        self.c2s_connections: set[Any] = set()
        # XEP-0198 sessions resume on either client listener.
        self.c2s_resumption = ResumptionRegistry(self.sm, reactor, config.c2s.stream_management)
        self.listeners: list[ListenerService] = []
        c2s = config.c2s
        common = dict(config=c2s, sm=self.sm, auth=self.auth, clock=reactor, tls_context=self.tls_context,
                      channel_binding=tls.channel_binding, default_domain=config.server.domains[0],
                      connections=self.c2s_connections, resumption=self.c2s_resumption)
        if c2s.port:
            endpoint = endpoints.TCP4ServerEndpoint(reactor, c2s.port, interface=c2s.interface)
            self._listen("c2s", endpoint, ClientStreamFactory(**common))
        if c2s.direct_tls_port:
            endpoint = endpoints.SSL4ServerEndpoint(reactor, c2s.direct_tls_port, self.tls_context,
                                                    interface=c2s.interface)
            self._listen("c2s-direct-tls", endpoint, ClientStreamFactory(direct_tls=True, **common))
        self.external_components: ComponentAcceptFactory | None = None
        if plan.external:
            listen = plan.listener
            self.external_components = ComponentAcceptFactory(listen, plan.external, self.router, reactor,
                                                              config.server.domains[0])
            if listen.port:
                if listen.tls:
                    endpoint = endpoints.SSL4ServerEndpoint(reactor, listen.port, self.tls_context,
                                                            interface=listen.interface)
                else:
                    endpoint = endpoints.TCP4ServerEndpoint(reactor, listen.port, interface=listen.interface)
                self._listen("components", endpoint, self.external_components)

    def _listen(self, name: str, endpoint: Any, factory: Any) -> None:
        listener = ListenerService(name, endpoint, factory)
        self.listeners.append(listener)

    def listener(self, name: str) -> ListenerService:
        """The listener service called ``name`` (``c2s``, ``c2s-direct-tls``, ``components``)."""
        for listener in self.listeners:
            if listener.name == name:
                return listener
        raise KeyError(name)

    def startService(self) -> None:
        c2s = self.config.c2s
        if c2s.allow_plain_without_tls:
            self._log.warn("SECURITY: PLAIN is offered on unencrypted streams (c2s.allow_plain_without_tls)")
        if not c2s.tls_required:
            self._log.warn("SECURITY: clients may authenticate without TLS (c2s.tls_required = false)")
        for line in self.authentication.warnings:
            self._log.warn("{line}", line=line)
        super().startService()
        self.started = defer.Deferred()
        d = defer.maybeDeferred(self.stores.start)
        d.addCallback(lambda _: self._start_rest())
        d.addCallbacks(self.started.callback, self._start_failed)

    def _start_rest(self) -> Any:
        for cls, ext_config in self.extension_classes:
            self.sm.load_extension(cls, ext_config)
        for component in self.components:
            component.attach(self.router)
        if self.external_components is not None:
            self.external_components.attach()
        for connector in self.component_connectors:
            connector.startService()
        self.sm.startService()
        for listener in self.listeners:
            listener.startService()
        return defer.gatherResults([l.when_listening() for l in self.listeners], consumeErrors=True)

    def _start_failed(self, failure: Any) -> None:
        log_failure(self._log, failure, "tigasepy failed to start")
        self.started.errback(failure)

    def stopService(self) -> Any:
        for stream in list(self.c2s_connections):
            stream.close("system-shutdown", "The server is shutting down")
        self.c2s_resumption.close_all()
        stops = [defer.maybeDeferred(l.stopService) for l in self.listeners if l.running]
        if self.sm.running:
            stops.append(defer.maybeDeferred(self.sm.stopService))
        for component in self.components:
            component.detach()
        if self.external_components is not None:
            self.external_components.detach()
        stops.extend(defer.maybeDeferred(c.stopService) for c in self.component_connectors if c.running)
        d = defer.DeferredList(stops)
        d.addCallback(lambda _: self.authentication.close())
        d.addCallback(lambda _: self.stores.close())
        d.addCallback(lambda _: service.MultiService.stopService(self))
        return d


def build_service(config: Config, reactor: Any) -> TigaseService:
    """The service tree for ``config``; start it with ``startService`` (twistd does)."""
    return TigaseService(config, reactor)
