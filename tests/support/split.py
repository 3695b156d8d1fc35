"""A split deployment in the test process: one session-manager service and connection-manager
services, each a whole ``TigaseService`` with its own data directory, joined by the real
TLS link over 127.0.0.1, on the reactor pytest-twisted installed (slixmpp shares its loop).

``start_split`` builds and starts them (connection managers first, then the session
manager, which dials them) and waits until every link session is up.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from twisted.internet import defer, task

from support.server import LOOPBACK, _merge, free_port, integration_config
from tigasepy.auth.accounts import AccountManager
from tigasepy.config import Config
from tigasepy.service import TigaseService, build_service
from tigasepy.storage.interfaces import IAccountStore


def write_secret(data_dir: Path, secret: str) -> None:
    """Put the link secret where ``[link] secret_file`` defaults to (mode 600)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "link-secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")


@dataclass
class ConnectionManagerEndpoint:
    """What a ``ClientPool`` needs to reach one connection-manager process."""

    service: TigaseService
    config: Config
    passwords: dict[str, str]
    domain: str = "localhost"

    @property
    def c2s_port(self) -> int:
        """Its STARTTLS listener."""
        return self.service.listener("c2s").port.getHost().port

    @property
    def direct_tls_port(self) -> int:
        """Its direct TLS listener."""
        return self.service.listener("c2s-direct-tls").port.getHost().port

    @property
    def link_port(self) -> int:
        """Where the session manager connects."""
        return self.service.listener("link").port.getHost().port

    @property
    def certificate_path(self) -> Path:
        """This process's own self-signed certificate."""
        return self.config.data_path / f"{self.domain}.crt"

    def jid(self, user: str) -> str:
        """``user@localhost``."""
        return f"{user}@{self.domain}"


@dataclass
class Split:
    """The running deployment."""

    sm: TigaseService
    sm_config: Config
    cms: list[ConnectionManagerEndpoint]
    accounts: AccountManager
    passwords: dict[str, str] = field(default_factory=dict)

    def create_account(self, user: str, password: str) -> defer.Deferred:
        """Register ``user@localhost`` in the session manager's store."""
        jid = f"{user}@localhost"
        self.passwords[jid] = password
        return self.accounts.register(jid, password)

    def sessions_of(self, user: str) -> list[Any]:
        """The SM's bound sessions of ``user``."""
        return self.sm.sm.sessions_of(f"{user}@localhost")

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Stop the session manager, then the connection managers."""
        yield defer.maybeDeferred(self.sm.stopService)
        for cm in self.cms:
            yield defer.maybeDeferred(cm.service.stopService)


async def wait_until(condition: Any, what: str, timeout: float = 10.0) -> None:
    """From an asyncio test: poll ``condition()`` every 20 ms until true (bounded)."""
    waited = 0.0
    while not condition():
        if waited >= timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)
        waited += 0.02


@defer.inlineCallbacks
def _poll(reactor: Any, condition: Any, what: str, timeout: float = 10.0) -> Any:
    waited = 0.0
    while not condition():
        if waited >= timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        yield task.deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


def split_configs(root: Path, cms: int, overrides: Mapping[str, Any] | None = None,
                  cm_overrides: Mapping[str, Any] | None = None) -> tuple[Config, list[Config]]:
    """Configs for a session manager and ``cms`` connection managers under ``root``."""
    secret = secrets.token_urlsafe(32)
    link_ports = [free_port() for _ in range(cms)]
    fast = {"grace_period_s": 5, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "request_timeout_s": 5,
            "keepalive_s": 5}
    cm_configs = []
    for index, port in enumerate(link_ports):
        data = (root / f"cm{index + 1}").resolve()
        write_secret(data, secret)
        raw = {"server": {"roles": ["c2s"]}, "link": dict(fast, listen=f"{LOOPBACK}:{port}")}
        cm_configs.append(integration_config(data, _merge(raw, cm_overrides or {})))
    sm_data = (root / "sm").resolve()
    write_secret(sm_data, secret)
    raw = {"server": {"roles": ["sm"]},
           "link": dict(fast, connect=[f"{LOOPBACK}:{port}" for port in link_ports])}
    sm_config = integration_config(sm_data, _merge(raw, overrides or {}))
    return sm_config, cm_configs


@defer.inlineCallbacks
def start_split(root: Path, reactor: Any, cms: int = 2, overrides: Mapping[str, Any] | None = None,
                cm_overrides: Mapping[str, Any] | None = None) -> Any:
    """Build and start the deployment; fires with a ``Split`` once every link is up."""
    sm_config, cm_configs = split_configs(root, cms, overrides, cm_overrides)
    passwords: dict[str, str] = {}
    endpoints = []
    for config in cm_configs:
        service = build_service(config, reactor)
        service.startService()
        yield service.started
        endpoints.append(ConnectionManagerEndpoint(service, config, passwords))
    sm = build_service(sm_config, reactor)
    sm.startService()
    yield sm.started
    yield _poll(reactor, lambda: all(e.service.remote_sm.serving for e in endpoints), "every link session up")
    accounts = AccountManager(sm.stores.get(IAccountStore), sm_config.auth.scram_hashes,
                              sm_config.auth.scram_iterations, domains=sm_config.server.domains)
    return Split(sm, sm_config, endpoints, accounts, passwords)
