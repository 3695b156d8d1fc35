"""A private Prosody for interop tests, and the small DNS server it resolves our domain with.

Prosody (Debian's package, 0.12) runs as ``prosody --config FILE -F`` with its own config,
data directory and log in a temporary directory, on free loopback ports; no system
service is touched. Prosody looks up remote domains in DNS (libunbound), with no static
route option, so the fixture gives it a DNS server of its own: ``FakeDNS`` answers on
127.0.0.1 for the test domains only (SRV ``_xmpp-server._tcp`` / ``_xmpps-server._tcp`` and
A records pointing at tigasepy's s2s ports), and Prosody's libunbound forwards every query
there and nowhere else (``resolvconf = false``). Test domains end in ``.example``
(libunbound refuses ``.test`` and ``.localhost`` names locally). tigasepy reaches Prosody
through a static route.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.names import dns, error as dns_error, server as dns_server

from support.server import LOOPBACK

PROSODY = shutil.which("prosody")
PROSODYCTL = shutil.which("prosodyctl")
START_TIMEOUT_S = 15.0


def prosody_missing() -> str | None:
    """Why the interop tests cannot run here (None when they can): prosody, prosodyctl and
    lua-unbound (without it Prosody would ask the system's name servers) are needed."""
    if PROSODY is None or PROSODYCTL is None:
        return "prosody is not installed (apt-get install prosody lua-unbound)"
    interpreter = Path(PROSODY).read_text(errors="replace").splitlines()[0].removeprefix("#!").split()
    try:
        result = subprocess.run([*interpreter, "-e", 'require "lunbound"'], capture_output=True, timeout=10,
                                stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot run prosody's Lua interpreter {interpreter}: {e}"
    if result.returncode != 0:
        return "lua-unbound is not installed (apt-get install lua-unbound): prosody could not use the test's DNS"
    return None


class FakeDNS:
    """An authoritative-for-everything DNS server on 127.0.0.1 that knows only what it is told.

    Names it knows get their records (or an empty NOERROR answer for other types); every
    other name is NXDOMAIN. ``queries`` records what was asked, as ``(name, type)``.
    """

    def __init__(self) -> None:
        self.records: dict[str, list[Any]] = {}
        self.queries: list[tuple[str, str]] = []
        self.port = 0
        self._listeners: list[Any] = []

    def add_srv(self, name: str, port: int, target: str, priority: int = 0, weight: int = 5) -> None:
        """An SRV record ``name`` -> ``target:port``."""
        self.records.setdefault(name.lower(), []).append(
            dns.Record_SRV(priority, weight, port, target, ttl=5))

    def add_a(self, name: str, address: str = LOOPBACK) -> None:
        """An A record."""
        self.records.setdefault(name.lower(), []).append(dns.Record_A(address, ttl=5))

    def query(self, query: dns.Query, timeout: Any = None) -> defer.Deferred:
        """``IResolver``-style answer for ``twisted.names.server``."""
        name = query.name.name.decode("ascii", "replace").lower().rstrip(".")
        self.queries.append((name, dns.QUERY_TYPES.get(query.type, str(query.type))))
        if name not in self.records:
            return defer.fail(dns_error.AuthoritativeDomainError(name))
        answers = [dns.RRHeader(name=name, type=record.TYPE, payload=record, ttl=5, auth=True)
                   for record in self.records[name] if record.TYPE == query.type]
        return defer.succeed((answers, [], []))

    def listen(self, reactor: Any) -> int:
        """Listen on UDP and TCP (same free port) on 127.0.0.1; returns the port."""
        factory = dns_server.DNSServerFactory(authorities=[self], verbose=0)
        for _ in range(20):
            udp = reactor.listenUDP(0, dns.DNSDatagramProtocol(controller=factory), interface=LOOPBACK)
            port = udp.getHost().port
            try:
                tcp = reactor.listenTCP(port, factory, interface=LOOPBACK)
            except Exception:  # noqa: BLE001 - the TCP side of that port is taken: try another
                udp.stopListening()
                continue
            self._listeners = [udp, tcp]
            self.port = port
            return port
        raise RuntimeError("no free port for the fake DNS server")

    def stop(self) -> defer.Deferred:
        """Stop listening."""
        listeners, self._listeners = self._listeners, []
        return defer.gatherResults([defer.maybeDeferred(l.stopListening) for l in listeners])


def _lua(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ProsodyServer:
    """One Prosody process serving ``domain`` on loopback (see the module docstring).

    Args:
        directory: its own directory (config, data, log, pid file).
        domain: the one VirtualHost.
        certificate, private_key: PEM files for c2s and s2s.
        dns_port: the FakeDNS port libunbound forwards to.
        ca_file: trust these CAs for peer certificates (SASL EXTERNAL); None: the defaults.
        secure_auth: ``s2s_secure_auth``: refuse peers without a valid certificate (no dialback).
        bidi: load mod_s2s_bidi (XEP-0288).
        direct_tls: also listen for direct TLS s2s (XEP-0368) on ``s2s_tls_port``.
    """

    def __init__(self, directory: Path, domain: str, certificate: Path, private_key: Path, dns_port: int, *,
                 ca_file: Path | None = None, secure_auth: bool = False, bidi: bool = False,
                 direct_tls: bool = False) -> None:
        from support.server import free_port

        self.directory = directory
        self.domain = domain
        self.certificate = certificate
        self.private_key = private_key
        self.dns_port = dns_port
        self.ca_file = ca_file
        self.secure_auth = secure_auth
        self.bidi = bidi
        self.c2s_port = free_port()
        self.s2s_port = free_port()
        self.s2s_tls_port = free_port() if direct_tls else 0
        self.config_path = directory / "prosody.cfg.lua"
        self.log_path = directory / "prosody.log"
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "data").mkdir(exist_ok=True)
        (directory / "certs").mkdir(exist_ok=True)
        self.config_path.write_text(self._config(), encoding="utf-8")

    def _config(self) -> str:
        ssl = f"certificate = {_lua(str(self.certificate))}; key = {_lua(str(self.private_key))};"
        if self.ca_file is not None:
            ssl += f" cafile = {_lua(str(self.ca_file))};"
        modules = ['"roster"', '"saslauth"', '"tls"', '"dialback"', '"disco"', '"ping"']
        if self.bidi:
            modules.append('"s2s_bidi"')
        d = self.directory
        return f"""-- written by tests/support/prosody.py
run_as_root = true
pidfile = {_lua(str(d / "prosody.pid"))}
data_path = {_lua(str(d / "data"))}
plugin_paths = {{ }}
certificates = {_lua(str(d / "certs"))}
log = {{ debug = {_lua(str(self.log_path))} }}
interfaces = {{ "{LOOPBACK}" }}
local_interfaces = {{ "{LOOPBACK}" }}
use_ipv6 = false
c2s_ports = {{ {self.c2s_port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ {self.s2s_port} }}
s2s_direct_tls_ports = {{ {self.s2s_tls_port or ""} }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ {"; ".join(modules)} }}
modules_disabled = {{ "posix" }}
authentication = "internal_plain"
storage = "internal"
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = {"true" if self.secure_auth else "false"}
s2s_timeout = 10
unbound = {{ resolvconf = false; hoststxt = false; forward = "{LOOPBACK}@{self.dns_port}";
            options = {{ ["do-not-query-localhost:"] = "no" }} }}
ssl = {{ {ssl} }}

VirtualHost {_lua(self.domain)}
    ssl = {{ {ssl} }}
"""

    def prosodyctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``prosodyctl --config FILE ARGS`` (bounded)."""
        assert PROSODYCTL is not None
        return subprocess.run([PROSODYCTL, "--config", str(self.config_path), *args], capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL)

    def register(self, user: str, password: str) -> None:
        """Create ``user@domain``."""
        result = self.prosodyctl("register", user, self.domain, password)
        assert result.returncode == 0, f"prosodyctl register failed: {result.stdout}{result.stderr}"

    def start(self) -> None:
        """Start Prosody in the foreground (a child process) and wait until its ports accept."""
        assert PROSODY is not None
        output = open(self.directory / "prosody.out", "wb")
        self.process = subprocess.Popen([PROSODY, "--config", str(self.config_path), "-F"], stdin=subprocess.DEVNULL,
                                        stdout=output, stderr=subprocess.STDOUT, cwd=str(self.directory))
        output.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prosody exited with {self.process.returncode}:\n{self.tail()}")
            if all(_accepts(port) for port in (self.c2s_port, self.s2s_port, self.s2s_tls_port) if port):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"prosody did not open its ports within {START_TIMEOUT_S}s:\n{self.tail()}")

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 5 s)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def tail(self, lines: int = 60) -> str:
        """The end of Prosody's log and console output (for failure messages)."""
        out = []
        for path in (self.directory / "prosody.out", self.log_path):
            if path.exists():
                out.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False
