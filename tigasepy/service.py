"""Build the server's service tree from a ``Config``: what twistd runs and what embedders use.

``build_service(config, reactor)`` returns a ``TigaseService`` (a ``MultiService``)
holding storage, the router, the session manager with its extensions, the
authentication service and the c2s listeners. Nothing here touches a global reactor.

``[server] roles`` decides which of them a process holds (ARCHITECTURE.md section 5):
all of them by default; a connection-manager process (``roles = ["c2s"]``) has no
storage, session manager or authentication, and its c2s relays to the session manager
over the link it listens for (``router/link_cm.py``); the session-manager process dials
its connection managers (``router/link_sm.py``). ``TigaseService.reload`` applies a new
config without a restart (``tigasepy/reload.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints

from tigasepy.auth.factory import build_authentication
from tigasepy.c2s.factory import ClientStreamFactory
from tigasepy.c2s.stream_management import ResumptionRegistry
from tigasepy.components import components_plan
from tigasepy.components.connector import build_connector
from tigasepy.components.external import ComponentAcceptFactory
from tigasepy.config import Config, ConfigError, parse_address
from tigasepy.extensions import extensions_for
from tigasepy.log_level import Logger, set_log_level
from tigasepy.router.link import LinkSettings, link_tls_options, load_link_secret, tls_binding
from tigasepy.router.link_cm import LinkedClientStreamFactory, LinkListenerFactory, RemoteSessionManager
from tigasepy.router.link_sm import SessionManagerLinks
from tigasepy.router.router import LocalDelivery, Router
from tigasepy.s2s.build import build_federation
from tigasepy.sm.manager import SessionManager
from tigasepy.storage.factory import open_stores
from tigasepy import tls
from tigasepy.storage.outage import log_failure
from tigasepy.stream.tcp import WriteNowEndpoint, supports_write_now


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
        #: Reads the config again for ``reload_from_source`` (tap.py adds its overrides).
        self.config_loader: Any = None
        self.listeners: list[ListenerService] = []
        self.c2s_connections: set[Any] = set()
        self.c2s_factories: list[ClientStreamFactory] = []
        self.link: SessionManagerLinks | None = None        # sm role, [link] connect
        self.remote_sm: RemoteSessionManager | None = None  # connection-manager role, [link] listen
        self.http: Any = None                               # [http] (tigasepy/http/site.py)
        if not config.has_role("sm"):
            self._build_connection_manager(config, reactor)
            return
        self.stores = open_stores(config, reactor)
        self.router = Router()
        self.sm = SessionManager(config.server.domains, self.stores, self.router, reactor,
                                 max_resources=config.c2s.max_resources_per_account, config=config)
        self.sm.reloader = self.reload_from_source     # the admin "reload configuration" command
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
        # XEP-0198 sessions resume on either client listener.
        self.c2s_resumption = ResumptionRegistry(self.sm, reactor, config.c2s.stream_management)
        if config.has_role("c2s"):
            self._c2s_listeners(config, dict(sm=self.sm, auth=self.auth))
        self.http = self._http_listeners(config, reactor) if config.has_role("c2s") else None
        if config.link.connect:
            self.link = SessionManagerLinks(config, self.sm, self.auth, reactor, self._link_settings(config, True),
                                            self._link_connector)
        # [s2s]: federation is the router's default route (domains not served here).
        # (not in a session-manager process whose roles leave s2s out)
        self.federation = build_federation(config, self.router, reactor) if config.has_role("s2s") else None
        if self.federation is not None:
            self.router.default = self.federation.service
            for name, endpoint, factory in self.federation.listeners:
                self._listen(name, endpoint, factory)
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

    def _build_connection_manager(self, config: Config, reactor: Any) -> None:
        """A connection-manager process: c2s relaying to a remote session manager; no user data."""
        self.stores = None
        self.router = None
        self.sm = None
        self.extension_classes = []
        self.components = []
        self.component_connectors = []
        self.external_components = None
        self.authentication = None
        self.remote_sm = RemoteSessionManager(config, reactor, self.c2s_connections)
        self.auth = self.remote_sm.auth
        self.tls_context = tls.server_context_for(config)
        self.c2s_resumption = ResumptionRegistry(self.remote_sm, reactor, config.c2s.stream_management)
        self.remote_sm.resumption = self.c2s_resumption
        if config.has_role("c2s"):
            self._c2s_listeners(config, dict(sm=self.remote_sm, auth=self.auth, link=self.remote_sm,
                                             handed_over=self.remote_sm.handed_over),
                                LinkedClientStreamFactory)
        host, port = parse_address(config.link.listen, ("link", "listen"))
        cert, key = tls.ensure_certificate(config)
        endpoint = endpoints.SSL4ServerEndpoint(reactor, port, link_tls_options(cert, key, server=True),
                                                interface=host)
        self._listen("link", endpoint, LinkListenerFactory(self.remote_sm, self._link_settings(config, False)))

    def _c2s_listeners(self, config: Config, collaborators: dict[str, Any],
                       factory_class: type = ClientStreamFactory) -> None:
        c2s = config.c2s
        common = dict(config=c2s, clock=self.reactor, tls_context=self.tls_context,
                      channel_binding=tls.channel_binding, default_domain=config.server.domains[0],
                      connections=self.c2s_connections, resumption=self.c2s_resumption, **collaborators)
        if c2s.port:
            factory = factory_class(**common)
            self.c2s_factories.append(factory)
            self._listen("c2s", self.c2s_endpoint(c2s, direct_tls=False), factory)
        if c2s.direct_tls_port:
            factory = factory_class(direct_tls=True, **common)
            self.c2s_factories.append(factory)
            self._listen("c2s-direct-tls", self.c2s_endpoint(c2s, direct_tls=True), factory)

    def _http_listeners(self, config: Config, reactor: Any) -> Any:
        """``[http]``: WebSocket, BOSH, upload and host-meta on one Site (tigasepy/http/site.py)."""
        if not config.http.enabled:
            return None
        from tigasepy.http.site import HttpFrontend

        http = HttpFrontend(config, reactor, self.tls_context, self.sm, self.auth, self.c2s_connections,
                            self.c2s_resumption, router=self.router)
        http.port_of = lambda name: self.listener(name).port.getHost().port
        self.c2s_factories.append(http.factory)   # a reload reconfigures its streams too
        if http.upload is not None:
            if self.sm.is_local_domain(http.upload.component.domain):
                raise ConfigError(f"{http.upload.component.domain} is a hosted domain, not an upload "
                                  "component domain", ("http", "upload", "domain"))
            self.components.append(http.upload.component)
        for name, endpoint in http.endpoints(reactor):
            self._listen(name, endpoint, http.site)
        return http

    def c2s_endpoint(self, c2s: Any, direct_tls: bool) -> Any:
        """The server endpoint of a c2s listener for the ``[c2s]`` section ``c2s``."""
        if supports_write_now(self.reactor):
            return WriteNowEndpoint(self.reactor, c2s.direct_tls_port if direct_tls else c2s.port,
                                    backlog=c2s.listen_backlog, interface=c2s.interface,
                                    tls_context=self.tls_context if direct_tls else None)
        if direct_tls:
            return endpoints.SSL4ServerEndpoint(self.reactor, c2s.direct_tls_port, self.tls_context,
                                                backlog=c2s.listen_backlog, interface=c2s.interface)
        return endpoints.TCP4ServerEndpoint(self.reactor, c2s.port, backlog=c2s.listen_backlog,
                                            interface=c2s.interface)

    def _link_settings(self, config: Config, session_manager: bool) -> LinkSettings:
        link = config.link
        if link.secret_file:
            path = Path(link.secret_file).expanduser()
            if not path.is_absolute() and config.source:
                path = Path(config.source).parent / path
        else:
            path = config.data_path / "link-secret"
        return LinkSettings(link, load_link_secret(path, create=session_manager), tls_binding)

    def _link_connector(self, address: str) -> Any:
        """``connect(factory)`` for one connection manager: TLS 1.3 with our certificate."""
        host, port = parse_address(address, ("link", "connect"))
        cert, key = tls.ensure_certificate(self.config)
        options = link_tls_options(cert, key, server=False)

        def connect(factory: Any) -> defer.Deferred:
            return endpoints.SSL4ClientEndpoint(self.reactor, host, port, options, timeout=10).connect(factory)

        return connect

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
        set_log_level(self.config.server.log_level)
        c2s = self.config.c2s
        if c2s.allow_plain_without_tls:
            self._log.warn("SECURITY: PLAIN is offered on unencrypted streams (c2s.allow_plain_without_tls)")
        if not c2s.tls_required:
            self._log.warn("SECURITY: clients may authenticate without TLS (c2s.tls_required = false)")
        for line in self.authentication.warnings if self.authentication is not None else ():
            self._log.warn("{line}", line=line)
        super().startService()
        self.started = defer.Deferred()
        d = defer.maybeDeferred(self.stores.start) if self.stores is not None else defer.succeed(None)
        d.addCallback(lambda _: self._start_rest())
        d.addCallbacks(self.started.callback, self._start_failed)

    def _start_rest(self) -> Any:
        if self.sm is None:
            for listener in self.listeners:
                listener.startService()
            return defer.gatherResults([l.when_listening() for l in self.listeners], consumeErrors=True)
        for cls, ext_config in self.extension_classes:
            self.sm.load_extension(cls, ext_config)
        for component in self.components:
            if getattr(component, "needs_stores", False):   # e.g. MUC: rooms, archives
                component.attach(self.router, self.stores)
            else:
                component.attach(self.router)
        if self.external_components is not None:
            self.external_components.attach()
        for connector in self.component_connectors:
            connector.startService()
        self.sm.startService()
        if self.federation is not None:
            self.federation.service.startService()
        for listener in self.listeners:
            listener.startService()
        if self.link is not None:
            self.link.startService()
        return defer.gatherResults([l.when_listening() for l in self.listeners], consumeErrors=True)

    def _start_failed(self, failure: Any) -> None:
        log_failure(self._log, failure, "tigasepy failed to start")
        self.started.errback(failure)

    def stopService(self) -> Any:
        for stream in list(self.c2s_connections):
            stream.close("system-shutdown", "The server is shutting down")
        self.c2s_resumption.close_all()
        if self.sm is None:
            return self._stop_connection_manager()
        if self.link is not None and self.link.running:
            # Remote sessions end first (unavailable, offline storage), then the rest stops.
            d = defer.maybeDeferred(self.link.stopService)
            d.addCallback(lambda _: self._stop_session_manager())
            return d
        return self._stop_session_manager()

    def _stop_session_manager(self) -> Any:
        if self.federation is not None and self.federation.service.running:
            self.federation.service.stopService()   # closes s2s streams, bounces queues
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


    def _stop_connection_manager(self) -> Any:
        """Give the session manager the unbinds and bounces of the closed streams, then stop."""
        assert self.remote_sm is not None
        link = self.remote_sm
        client_listeners = [l for l in self.listeners if l.running and l.name != "link"]
        d = defer.DeferredList([defer.maybeDeferred(l.stopService) for l in client_listeners])
        d.addCallback(lambda _: link.drain(3.0))

        def rest(_: Any) -> Any:
            link.abandon("this connection manager is stopping")
            return defer.DeferredList([defer.maybeDeferred(l.stopService) for l in self.listeners if l.running])

        d.addCallback(rest)
        d.addCallback(lambda _: service.MultiService.stopService(self))
        return d

    # -- reconfiguration ----------------------------------------------------------------------
    def reload(self, new_config: Config) -> Any:
        """Apply ``new_config`` without a restart, leaving unconcerned sessions alone.

        Returns a ``ReloadReport`` (what changed, what needs a restart). See ``tigasepy/reload.py``.
        """
        from tigasepy.reload import apply_reload

        return apply_reload(self, new_config)

    def reload_from_source(self) -> Any:
        """Read the config again (``config_loader``, else the file it came from) and ``reload``.

        An invalid file is logged and changes nothing; returns the ``ReloadReport``.
        """
        from tigasepy.config import load_config
        from tigasepy.reload import ReloadReport

        try:
            loader = self.config_loader or (lambda: load_config(self.config.source))
            new_config = loader()
        except (ConfigError, OSError) as e:
            self._log.error("configuration reload refused, nothing changed: {error}", error=str(e))
            return ReloadReport(error=str(e))
        return self.reload(new_config)


def build_service(config: Config, reactor: Any) -> TigaseService:
    """The service tree for ``config``; start it with ``startService`` (twistd does)."""
    return TigaseService(config, reactor)
