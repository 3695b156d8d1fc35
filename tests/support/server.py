"""Run a whole tigasepy server in the test process, on loopback, for integration tests.

The server is the real service tree (``tigasepy.service.build_service``): SQLite storage
in a temporary data directory, the self-signed certificate generated there on first
start, the STARTTLS and direct-TLS c2s listeners on free loopback ports. It runs on
the reactor pytest-twisted installed; with the asyncio reactor (``--reactor=asyncio``,
set in setup.cfg) slixmpp clients share its event loop.

Ports: ``0`` disables a listener in the config, so free ports are chosen here first.
"""

from __future__ import annotations

import importlib.util
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from twisted.internet import defer

from tigasepy.auth.accounts import AccountManager
from tigasepy.config import Config, config_from_dict
from tigasepy.service import TigaseService, build_service
from tigasepy.storage.interfaces import IAccountStore

DOMAIN = "localhost"
LOOPBACK = "127.0.0.1"
#: The smallest iteration count the config accepts; keeps account creation and
#: slixmpp's pure-Python PBKDF2 fast.
TEST_SCRAM_ITERATIONS = 4096


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def extension_available(name: str) -> bool:
    """True when the built-in extension module ``tigasepy.extensions.<name>`` exists."""
    return importlib.util.find_spec(f"tigasepy.extensions.{name}") is not None


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def integration_config(data_dir: Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """A config for one test server: domain ``localhost``, loopback, free ports, SQLite.

    Built-in extensions whose module does not exist yet (work in progress) are
    disabled, so the rest can be tested.

    Args:
        data_dir: an absolute, empty directory (the certificate and database go there).
        overrides: nested tables merged over the defaults, e.g.
            ``{"c2s": {"stanza_size_limit_bytes": 10000}}``.
    """
    raw: dict[str, Any] = {
        "server": {"domains": [DOMAIN], "data_dir": str(data_dir), "log_level": "debug"},
        "c2s": {"interface": LOOPBACK, "port": free_port(), "direct_tls_port": free_port()},
        # No s2s listener, and no DNS: a remote domain without a static route bounces at once.
        "s2s": {"interface": LOOPBACK, "port": 0, "direct_tls_port": 0, "use_dns": False},
        "storage": {"backend": "sqlite", "path": "tigasepy.sqlite"},
        "auth": {"scram_iterations": TEST_SCRAM_ITERATIONS},
        "extensions": {name: {"enabled": False} for name in ("roster", "presence")
                       if not extension_available(name)},
    }
    return config_from_dict(_merge(raw, overrides or {}))


@dataclass
class RunningServer:
    """A started server and what tests need to reach it."""

    service: TigaseService
    config: Config
    accounts: AccountManager
    passwords: dict[str, str] = field(default_factory=dict)
    _stopping: defer.Deferred | None = field(default=None, repr=False)

    @property
    def domain(self) -> str:
        """The hosted domain (``localhost``)."""
        return self.config.server.domains[0]

    @property
    def c2s_port(self) -> int:
        """The STARTTLS listener's port."""
        return self.service.listener("c2s").port.getHost().port

    @property
    def direct_tls_port(self) -> int:
        """The direct TLS (XEP-0368) listener's port."""
        return self.service.listener("c2s-direct-tls").port.getHost().port

    @property
    def certificate_path(self) -> Path:
        """The generated self-signed certificate (PEM), for clients to trust."""
        return self.config.data_path / f"{self.domain}.crt"

    def jid(self, user: str) -> str:
        """``user@localhost``."""
        return f"{user}@{self.domain}"

    def create_account(self, user: str, password: str) -> "defer.Deferred[str]":
        """Register ``user@localhost`` (fires with the bare JID)."""
        jid = self.jid(user)
        self.passwords[jid] = password
        return self.accounts.register(jid, password)

    def sessions_of(self, user: str) -> list[Any]:
        """The SM's bound sessions of ``user`` (to check server-side state)."""
        return self.service.sm.sessions_of(self.jid(user))

    def stop(self) -> defer.Deferred:
        """Stop the whole service tree (closes client streams, listeners, storage).

        A test may stop the server itself; the fixture's later call then does nothing.
        """
        if self._stopping is not None:
            return defer.succeed(None)
        self._stopping = defer.maybeDeferred(self.service.stopService)
        return self._stopping


@defer.inlineCallbacks
def start_server(data_dir: Path, reactor: Any, overrides: Mapping[str, Any] | None = None) -> Any:
    """Build and start a server; fires with a ``RunningServer`` once it listens.

    Args:
        data_dir: absolute directory for the certificate and database.
        reactor: the running reactor.
        overrides: see ``integration_config``.
    """
    config = integration_config(data_dir, overrides)
    service = build_service(config, reactor)
    service.startService()
    try:
        yield service.started
    except BaseException:
        yield defer.maybeDeferred(service.stopService)
        raise
    accounts = AccountManager(service.stores.get(IAccountStore), config.auth.scram_hashes,
                              config.auth.scram_iterations, domains=config.server.domains)
    return RunningServer(service=service, config=config, accounts=accounts)
