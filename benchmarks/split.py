#!/usr/bin/env python3
"""Chat throughput of tigasepy all-in-one and split (one session manager + N c2s processes).

Each shape runs as separate ``twistd -n tigasepy`` processes on 127.0.0.1 from this
tree, with load accounts user1..userN (password ``password``) in the session manager's
SQLite store. The chat load (``python -m tigasepy.loadtest chat``) is divided over the
connection managers: one load-tool process per connection manager, each with its own
slice of the accounts, started together; their delivered msgs/s add up.

    .venv/bin/python benchmarks/split.py                          # all-in-one, split x1, split x2
    .venv/bin/python benchmarks/split.py --shapes split-2 --pairs 100 --duration 30

The machine is shared: read the CPU cost per message (server CPU time over every server
process, per delivered message) next to the throughput, and repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_secret(data: Path, secret: str) -> None:
    data.mkdir(parents=True, exist_ok=True)
    fd = os.open(data / "link-secret", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")


def config_text(data: Path, roles: list[str], link: str, c2s_port: int, tls: bool = False) -> str:
    """A process's config: plaintext + PLAIN clients unless ``tls`` (STARTTLS required)."""
    clients = "" if tls else "tls_required = false\nallow_plain_without_tls = true\n"
    return f"""[server]
domains = ["localhost"]
data_dir = "{data}"
roles = {json.dumps(roles)}

[c2s]
interface = "127.0.0.1"
port = {c2s_port}
direct_tls_port = 0
{clients}max_unauthenticated = 100000
idle_timeout_s = 3600
auth_timeout_s = 300

[s2s]
enabled = false

[auth]
scram_iterations = 4096

[extensions.mam]
enabled = false

{link}
"""


class Process:
    def __init__(self, folder: Path, text: str) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "tigasepy.toml"
        self.config.write_text(text)
        self.log = folder / "twistd.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([PYTHON, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                                      "--pidfile=", "--logfile", str(self.log), "tigasepy", "--config",
                                      str(self.config)], env=ENV, cwd=self.folder,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.exists() and text in self.log.read_text(errors="replace"):
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise SystemExit(f"{self.folder.name} exited; see {self.log}")
            time.sleep(0.1)
        raise SystemExit(f"{self.folder.name}: no {text!r} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def run_shape(shape: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    cms = 0 if shape == "all-in-one" else int(shape.split("-")[1])
    secret = secrets.token_urlsafe(32)
    processes: list[Process] = []
    ports: list[int] = []
    if cms == 0:
        port = free_port()
        sm = Process(root / "server", config_text(root / "server" / "data", ["c2s", "sm"], "", port))
        ports.append(port)
    else:
        link_ports = [free_port() for _ in range(cms)]
        for index, link_port in enumerate(link_ports):
            port = free_port()
            ports.append(port)
            data = root / f"cm{index + 1}" / "data"
            write_secret(data, secret)
            processes.append(Process(root / f"cm{index + 1}", config_text(
                data, ["c2s"], f'[link]\nlisten = "127.0.0.1:{link_port}"', port)))
        data = root / "sm" / "data"
        write_secret(data, secret)
        connect = json.dumps([f"127.0.0.1:{p}" for p in link_ports])
        sm = Process(root / "sm", config_text(data, ["sm"], f"[link]\nconnect = {connect}", 0))
    users = 2 * args.pairs
    subprocess.run([PYTHON, str(REPO / "benchmarks" / "tigasepy_accounts.py"), str(sm.config), str(users)],
                   check=True, env=ENV, cwd=sm.folder)
    try:
        for process in processes:
            process.start()
        sm.start()
        if cms == 0:
            sm.wait_for("c2s listening")
        for process in processes:
            process.wait_for("new link session")
        time.sleep(1)
        pids = ",".join(str(p.proc.pid) for p in [sm, *processes] if p.proc is not None)
        per = args.pairs // len(ports)
        tools = []
        for index, port in enumerate(ports):
            out = root / f"chat-{index}.json"
            command = [PYTHON, "-m", "tigasepy.loadtest", "chat", "--plain", "--port", str(port),
                       "--pairs", str(per), "--first-user", str(1 + index * 2 * per), "--window", str(args.window),
                       "--duration", str(args.duration), "--warmup", "3", "--json", str(out), "--quiet"]
            if index == 0:
                command += ["--server-pid", pids]
            tools.append((subprocess.Popen(command, env=ENV, cwd=root), out))
        figures = []
        for tool, out in tools:
            tool.wait(args.duration + 120)
            figures.append(json.loads(out.read_text())["figures"])
        first = figures[0]
        total = sum(f["msgs_per_s"] for f in figures)
        per_msg = first.get("server_us_per_msg")     # the first tool measured every server process
        return {
            "shape": shape,
            "msgs_per_s": round(total),
            "server_us_per_msg": round(per_msg * first["msgs_per_s"] / total) if per_msg and total else None,
            "p50_ms": max(f["p50_ms"] for f in figures),
            "p99_ms": max(f["p99_ms"] for f in figures),
            "lost": sum(f["lost"] for f in figures),
            "server_cpu": first.get("server_cpu_pct") or first.get("cpu_pct"),
        }
    finally:
        sm.stop()
        for process in processes:
            process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="all-in-one,split-1,split-2")
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--duration", type=float, default=15)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tigasepy-split-") as tmp:
        for shape in args.shapes.split(","):
            root = Path(tmp) / shape
            rows.append(run_shape(shape, root, args))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    print("| shape | msgs/s | server CPU us/msg (all processes) | round trip p50 | p99 | lost | server CPU % |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['shape']} | {row['msgs_per_s']} | {row['server_us_per_msg']} | {row['p50_ms']} ms | "
              f"{row['p99_ms']} ms | {row['lost']} | {row['server_cpu']} |")


if __name__ == "__main__":
    main()
