"""tigasepy servers as separate OS processes (``twistd -n tigasepy``), for multi-process tests.

Each process runs this working tree (``PYTHONPATH``), found by twistd through the plugin
in ``twisted/plugins`` of the tree, exactly as ``make run`` would run it installed. Output
goes to a log file per start; ``wait_log`` polls it (bounded). ``LinkProxy`` is a TCP
proxy in the test process that can cut the link's connections on demand.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import tomli_w
from twisted.internet import protocol
from twisted.protocols import portforward

REPO = Path(__file__).resolve().parents[2]


class ServerProcess:
    """One tigasepy process: its folder (config, data, logs), start/stop/kill, its log."""

    def __init__(self, name: str, folder: Path, config: dict[str, Any]) -> None:
        self.name = name
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config_path = folder / "tigasepy.toml"
        self.write_config(config)
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def write_config(self, config: dict[str, Any]) -> None:
        """(Re)write the TOML config file."""
        self.config = config
        self.config_path.write_text(tomli_w.dumps(config), encoding="utf-8")

    @property
    def data_dir(self) -> Path:
        """The data directory named by the config."""
        return Path(self.config["server"]["data_dir"])

    @property
    def log_path(self) -> Path:
        """The log of the current (last) start."""
        return self.folder / f"twistd-{self.starts}.log"

    def start(self) -> None:
        """Start ``twistd -n tigasepy --config ...`` (the previous run must have ended)."""
        self.starts += 1
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
             "tigasepy", "--config", str(self.config_path)],
            cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def log(self) -> str:
        """The current run's log so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    async def wait_log(self, text: str, count: int = 1, timeout: float = 20.0) -> None:
        """Wait (bounded) until ``text`` appears ``count`` times in the current log."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.log().count(text) < count:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.process.returncode}):\n{self.log()[-3000:]}")
            if loop.time() > deadline:
                raise AssertionError(f"{self.name}: no {text!r} in its log within {timeout}s:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.05)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process."""
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: the process dies without a word to anyone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait (SIGKILL after ``timeout``)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


class _TrackedProxyServer(portforward.ProxyServer):
    def connectionMade(self) -> None:
        self.factory.open.add(self)
        super().connectionMade()

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        self.factory.open.discard(self)
        super().connectionLost(reason)


class LinkProxy(portforward.ProxyFactory):
    """Forwards TCP to ``host:port``; ``cut()`` breaks every connection through it."""

    protocol = _TrackedProxyServer
    noisy = False

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.open: set[Any] = set()

    def cut(self) -> int:
        """Abort every proxied connection (both directions); returns how many."""
        count = len(self.open)
        for server in list(self.open):
            if server.peer is not None:
                server.peer.transport.abortConnection()
            server.transport.abortConnection()
        return count
