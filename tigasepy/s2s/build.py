"""Build the federation part of the service tree from the config (``service.py`` calls this)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import endpoints

from tigasepy import tls
from tigasepy.config import Config
from tigasepy.interfaces import IRouter
from tigasepy.s2s.certificates import S2STLS, TrustStore
from tigasepy.s2s.dialback import load_or_create_dialback_secret
from tigasepy.s2s.factory import IncomingServerFactory
from tigasepy.s2s.resolver import Resolver, make_dns_resolver
from tigasepy.s2s.service import S2SService

#: The generated dialback secret, in the data directory (``[s2s] dialback_secret_file`` unset).
DIALBACK_SECRET_FILE = "s2s-dialback-secret"


@dataclass
class Federation:
    """The ``S2SService`` and its listeners as ``(name, endpoint, factory)``."""

    service: S2SService
    listeners: list[tuple[str, Any, Any]] = field(default_factory=list)


def _config_path(config: Config, value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute() and config.source:
        path = Path(config.source).parent / path
    return path


def build_federation(config: Config, router: IRouter, reactor: Any) -> Federation | None:
    """The federation service for ``config``, or None when ``[s2s] enabled = false`` or
    this process does not run the ``s2s`` role."""
    s2s = config.s2s
    if not s2s.enabled or not config.has_role("s2s"):
        return None
    certificate, private_key = tls.ensure_certificate(config)
    trust = TrustStore(_config_path(config, s2s.ca_file) if s2s.ca_file else "")
    s2s_tls = S2STLS(certificate, private_key, trust, tls.host_certificates(config))
    secret_path = (_config_path(config, s2s.dialback_secret_file) if s2s.dialback_secret_file
                   else config.data_path / DIALBACK_SECRET_FILE)
    secret = load_or_create_dialback_secret(secret_path)
    static = {domain: s2s.route_targets(domain) or () for domain in s2s.routes}
    resolver = Resolver(static, use_dns=s2s.use_dns, dns_resolver=make_dns_resolver(reactor))
    service = S2SService(s2s, router, reactor, secret, s2s_tls, resolver,
                         default_domain=config.server.domains[0])
    federation = Federation(service)
    endpoint: Any
    if s2s.port:
        endpoint = endpoints.TCP4ServerEndpoint(reactor, s2s.port, interface=s2s.interface)
        federation.listeners.append(("s2s", endpoint, IncomingServerFactory(service)))
    if s2s.direct_tls_port:
        endpoint = endpoints.SSL4ServerEndpoint(reactor, s2s.direct_tls_port, s2s_tls.server,
                                                interface=s2s.interface)
        federation.listeners.append(("s2s-direct-tls", endpoint, IncomingServerFactory(service, direct_tls=True)))
    return federation
