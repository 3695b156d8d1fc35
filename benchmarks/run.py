#!/usr/bin/env python3
"""Run the standard load-test set against tigasepy and, where installed, Prosody and ejabberd.

Each server is started by this script with its own config and data directory under a
temporary folder, listening on 127.0.0.1 only, with load accounts user1..userN
(password ``password``) created up front and rate limits off. The same tool
(``python -m tigasepy.loadtest``) and the same workload run against each, and a
markdown table of the figures with tigasepy/peer ratios is written.

    .venv/bin/python benchmarks/run.py                       # everything installed, default sizes
    .venv/bin/python benchmarks/run.py --servers tigasepy --quick
    .venv/bin/python benchmarks/run.py --repeat 3 --out benchmarks/results/today

Accounts: tigasepy's go straight into its SQLite store (``tigasepy.loadtest.accounts``);
Prosody's are one ``prosodyctl register`` whose account file is copied per user
(same password, same keys); ejabberd's go through its HTTP API (``mod_http_api``).

The machine is shared (other processes compete for the CPU): use ``--repeat`` and read
the server CPU column; every run's JSON is kept in the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: The tigasepy source the server runs from (``--server-tree``; the tool always runs from REPO).
SERVER_TREE = [REPO]
#: Keep tigasepy's default message archiving (XEP-0313) on (``--archive``).
ARCHIVE = [False]
NO_ARCHIVE = """
# Prosody and ejabberd run here without message archiving: so does tigasepy (--archive keeps it).
[extensions.mam]
enabled = false
"""
PYTHON = sys.executable
DOMAIN = "localhost"
PASSWORD = "password"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Wait until something accepts on 127.0.0.1:port (fail if ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed EC P-256 certificate for ``localhost`` (the key type tigasepy generates)."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-subj", f"/CN={DOMAIN}", "-days", "30", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


class Server:
    """One server under test: ``start(users)``, ``pid``, ``port``, ``stop()``."""

    name = "?"
    mechanism = "SCRAM-SHA-1"     # the one every server here stores keys for

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / self.name
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None

    def start(self, users: int) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def version(self) -> str:
        return ""


class Tigasepy(Server):
    """tigasepy under ``twistd -n tigasepy`` with SQLite storage."""

    name = "tigasepy"

    def start(self, users: int) -> None:
        config = self.dir / "tigasepy.toml"
        config.write_text(f"""[server]
domains = ["{DOMAIN}"]
data_dir = "{self.dir / 'data'}"

[c2s]
interface = "127.0.0.1"
port = {self.port}
direct_tls_port = 0
max_unauthenticated = 100000
idle_timeout_s = 3600
auth_timeout_s = 300

[s2s]
enabled = false

[storage]
backend = "sqlite"

[auth]
scram_iterations = 4096
{"" if ARCHIVE[0] else NO_ARCHIVE}""")
        env = dict(os.environ, PYTHONPATH=str(SERVER_TREE[0]))
        subprocess.run([PYTHON, str(REPO / "benchmarks" / "tigasepy_accounts.py"), str(config), str(users)],
                       check=True, env=env, cwd=str(self.dir))
        twistd = str(Path(PYTHON).parent / "twistd")
        self.proc = subprocess.Popen([twistd, "-n", "--pidfile=", "--logfile", str(self.dir / "server.log"),
                                      "tigasepy", "--config", str(config)], env=env, cwd=str(self.dir),
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "stderr.log", "w"))
        wait_port(self.port, 60, self.proc)
        self.pid = self.proc.pid
        time.sleep(2)

    def version(self) -> str:
        if SERVER_TREE[0] != REPO:
            return f"tree {SERVER_TREE[0].name}"
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        return f"git {out.stdout.strip()}"


class Prosody(Server):
    """Prosody (Debian package) with its own config, data directory and certificate."""

    name = "prosody"

    def start(self, users: int) -> None:
        cert, key = make_certificate(self.dir)
        data = self.dir / "data"
        data.mkdir()
        (self.dir / "certs").mkdir()
        config = self.dir / "prosody.cfg.lua"
        config.write_text(f"""run_as_root = true
pidfile = "{self.dir}/prosody.pid"
data_path = "{data}"
certificates = "{self.dir}/certs"
log = {{ warn = "{self.dir}/prosody.log" }}
network_backend = "epoll"
modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "ping"; "version"; "posix" }}
modules_disabled = {{ "s2s"; "limits" }}
c2s_ports = {{ {self.port} }}
c2s_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{}}
http_ports = {{}}
https_ports = {{}}
component_ports = {{}}
authentication = "internal_hashed"
c2s_require_encryption = true
allow_registration = false
VirtualHost "{DOMAIN}"
  ssl = {{ certificate = "{cert}"; key = "{key}" }}
""")
        subprocess.run(["prosodyctl", "--config", str(config), "register", "user1", DOMAIN, PASSWORD],
                       check=True, capture_output=True)
        accounts = data / DOMAIN / "accounts"
        template = (accounts / "user1.dat").read_bytes()
        for n in range(2, users + 1):
            (accounts / f"user{n}.dat").write_bytes(template)
        self.proc = subprocess.Popen(["prosody", "--config", str(config), "-F"], cwd=str(self.dir),
                                     stdout=open(self.dir / "stdout.log", "w"), stderr=subprocess.STDOUT)
        wait_port(self.port, 30, self.proc)
        self.pid = self.proc.pid
        time.sleep(2)

    def version(self) -> str:
        out = subprocess.run(["prosodyctl", "about"], capture_output=True, text=True)
        return out.stdout.splitlines()[0] if out.stdout else ""


class Ejabberd(Server):
    """ejabberd (Debian package) as its own Erlang node with a private config and spool."""

    name = "ejabberd"

    def _ctl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess:
        return subprocess.run(["ejabberdctl", "--config-dir", str(self.dir), "--config", str(self.dir / "ejabberd.yml"),
                               "--spool", str(self.dir / "db"), "--logs", str(self.dir / "logs"),
                               "--node", self.node, *args], **kw)

    def start(self, users: int) -> None:
        cert, key = make_certificate(self.dir)
        (self.dir / "server.pem").write_bytes(key.read_bytes() + cert.read_bytes())
        (self.dir / "db").mkdir()
        (self.dir / "logs").mkdir()
        if Path("/etc/ejabberd/inetrc").exists():
            shutil.copy("/etc/ejabberd/inetrc", self.dir / "inetrc")
        self.api_port = free_port()
        self.node = f"ejbench{os.getpid()}@localhost"
        (self.dir / "ejabberd.yml").write_text(f"""hosts:
  - {DOMAIN}
loglevel: warning
certfiles:
  - {self.dir}/server.pem
listen:
  -
    port: {self.port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    backlog: 4096
    max_stanza_size: 262144
    shaper: none
    access: all
    starttls_required: true
  -
    port: {self.api_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api
auth_method: internal
auth_password_format: scram
auth_scram_hash: sha
shaper_rules:
  c2s_shaper: none
  max_user_sessions: 10000
access_rules:
  local:
    allow: all
  c2s:
    allow: all
api_permissions:
  "loopback admin":
    from:
      - ejabberd_ctl
      - mod_http_api
    who:
      ip: 127.0.0.0/8
    what: "*"
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_version: {{}}
  mod_admin_extra: {{}}
""")
        subprocess.run(["chown", "-R", "ejabberd", str(self.dir)], check=True)
        os.chmod(self.dir.parent, 0o755)
        self.proc = subprocess.Popen(["ejabberdctl", "--config-dir", str(self.dir), "--config",
                                      str(self.dir / "ejabberd.yml"), "--spool", str(self.dir / "db"),
                                      "--logs", str(self.dir / "logs"), "--node", self.node, "foreground"],
                                     cwd=str(self.dir), stdout=open(self.dir / "stdout.log", "w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(self.api_port, 60, self.proc)
        wait_port(self.port, 30, self.proc)
        for n in range(1, users + 1):
            body = json.dumps({"user": f"user{n}", "host": DOMAIN, "password": PASSWORD}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}/api/register", data=body, method="POST")
            urllib.request.urlopen(req, timeout=30).read()
        self.pid = beam_pid(self.port)
        time.sleep(5)                  # let the VM settle before the idle RSS baseline

    def stop(self) -> None:
        if self.proc is None:
            return
        self._ctl("stop", capture_output=True, timeout=60)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)

    def version(self) -> str:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "ejabberd"], capture_output=True, text=True)
        return f"ejabberd {out.stdout.strip()}"


def beam_pid(port: int) -> int | None:
    """The PID of the Erlang VM listening on ``port`` (ejabberdctl's own PID is a shell)."""
    sys.path.insert(0, str(REPO))
    from tigasepy.loadtest.cli import find_listener_pid

    return find_listener_pid(port)


SERVERS = {"tigasepy": (Tigasepy, None), "prosody": (Prosody, "prosody"), "ejabberd": (Ejabberd, "ejabberdctl")}


def scenarios(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """The standard set: (name, loadtest arguments). Idle runs first, on a fresh server."""
    return [
        ("idle", ["idle", "--users", str(args.users), "--concurrency", "50", "--duration", "3"]),
        ("login", ["login", "--users", str(args.users), "--concurrency", str(args.login_concurrency),
                   "--workers", str(args.workers)]),
        ("chat", ["chat", "--pairs", str(args.pairs), "--window", str(args.window), "--duration",
                  str(args.chat_duration), "--workers", str(args.workers)]),
        ("rtt", []),    # soak --echo at half of this server's best chat throughput: see rtt_argv
        ("presence", ["presence", "--users", str(args.presence_users), "--duration", "5", "--interval", "0.05"]),
        ("soak", ["soak", "--pairs", str(args.pairs), "--rate", str(args.soak_rate), "--duration",
                  str(args.soak_duration), "--warmup", "2", "--workers", str(args.workers)]),
    ]


def rtt_argv(args: argparse.Namespace, chat_reports: list[dict[str, Any]]) -> list[str] | None:
    """Round trips at half of the server's maximum throughput: the best chat run's delivered
    msgs/s (requests and echoes) halved, carried by ``soak --echo`` (R each way = half / 2)."""
    top = best(chat_reports, "msgs_per_s")
    if top is None:
        return None
    rate = max(round(top["figures"]["msgs_per_s"] / 4), 1)
    return ["soak", "--echo", "--pairs", str(args.pairs), "--rate", str(rate), "--duration",
            str(args.rtt_duration), "--warmup", "2", "--workers", str(args.workers)]


def run_tool(server: Server, name: str, argv: list[str], out: Path, tag: str) -> dict[str, Any] | None:
    """One loadtest run; returns its report dict (None if it failed)."""
    path = out / f"{server.name}-{name}-{tag}.json"
    cmd = [PYTHON, "-m", "tigasepy.loadtest", *argv, "--port", str(server.port), "--domain", DOMAIN,
           "--mechanism", server.mechanism, "--server-pid", str(server.pid), "--quiet", "--json", str(path)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(REPO), timeout=1800)
    line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-300:]
    print(f"  {server.name:9} {line}", flush=True)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def best(reports: list[dict[str, Any]], key: str, higher: bool = True) -> dict[str, Any] | None:
    """The run with the best ``figures[key]`` (runs on a shared machine: keep the least disturbed)."""
    scored = [r for r in reports if r and r["figures"].get(key) is not None]
    if not scored:
        return None
    return (max if higher else min)(scored, key=lambda r: r["figures"][key])


ROWS = [
    # (label, scenario, figure key, higher is better, format)
    ("idle: KiB per authenticated connection", "idle", "kib_per_connection", False, "{:.1f}"),
    ("login storm: logins/s (SCRAM-SHA-1 + STARTTLS)", "login", "logins_per_s", True, "{:.0f}"),
    ("login storm: latency p99 (ms)", "login", "login_p99_ms", False, "{:.0f}"),
    ("login storm: server CPU per login (ms)", "login", "server_ms_per_login", False, "{:.2f}"),
    ("chat: delivered msgs/s", "chat", "msgs_per_s", True, "{:.0f}"),
    ("chat: round trip p50 (ms)", "chat", "p50_ms", False, "{:.1f}"),
    ("chat: round trip p99 (ms)", "chat", "p99_ms", False, "{:.1f}"),
    ("chat: server CPU (% of a core)", "chat", "server_cpu_pct", None, "{:.0f}"),
    ("chat: server CPU per delivered message (us)", "chat", "server_us_per_msg", False, "{:.0f}"),
    ("presence: fan-out complete p99 (ms)", "presence", "fanout_p99_ms", False, "{:.1f}"),
    ("half of max load: msgs/s each way (soak --echo)", "rtt", "rate", None, "{:.0f}"),
    ("half of max load: round trip p50 (ms)", "rtt", "p50_ms", False, "{:.1f}"),
    ("half of max load: round trip p99 (ms)", "rtt", "p99_ms", False, "{:.1f}"),
    ("soak: one-way latency p99 (ms)", "soak", "p99_ms", False, "{:.1f}"),
    ("soak: lost + duplicated", "soak", "lost_dup", False, "{:.0f}"),
]

PRIMARY = {"idle": ("kib_per_connection", False), "login": ("logins_per_s", True), "chat": ("msgs_per_s", True),
           "presence": ("fanout_p99_ms", False), "soak": ("p99_ms", False), "rtt": ("p99_ms", False)}


def table(results: dict[str, dict[str, list[dict[str, Any]]]], versions: dict[str, str]) -> str:
    """The markdown table: one column per server, then tigasepy/peer ratios."""
    names = list(results)
    peers = [n for n in names if n != "tigasepy"]
    header = "| figure | " + " | ".join(f"{n} ({versions.get(n, '')})" for n in names)
    header += "".join(f" | tigasepy / {p}" for p in peers if "tigasepy" in results) + " |"
    lines = [header, "|" + " --- |" * (1 + len(names) + (len(peers) if "tigasepy" in results else 0))]
    for label, scenario, key, _higher, fmt in ROWS:
        values: dict[str, float | None] = {}
        for n in names:
            pkey, phigher = PRIMARY[scenario]
            report = best(results[n].get(scenario, []), pkey, phigher)
            if report is None:
                values[n] = None
                continue
            f = report["figures"]
            values[n] = (f.get("lost", 0) + f.get("duplicates", 0)) if key == "lost_dup" else f.get(key)
        cells = [fmt.format(values[n]) if values[n] is not None else "-" for n in names]
        ratios = []
        if "tigasepy" in results:
            for p in peers:
                a, b = values.get("tigasepy"), values.get(p)
                ratios.append(f"{a / b:.2f}" if a is not None and b else "-")
        lines.append(f"| {label} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="tigasepy,prosody,ejabberd",
                        help="comma-separated servers to run (missing ones are skipped)")
    parser.add_argument("--users", type=int, default=1000, help="accounts for idle and login (default 1000)")
    parser.add_argument("--login-concurrency", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--chat-duration", type=float, default=10.0)
    parser.add_argument("--presence-users", type=int, default=30)
    parser.add_argument("--soak-rate", type=float, default=500.0)
    parser.add_argument("--soak-duration", type=float, default=30.0)
    parser.add_argument("--rtt-duration", type=float, default=20.0,
                        help="seconds of soak --echo at half of the chat maximum")
    parser.add_argument("--workers", type=int, default=2, help="load-tool processes for login, chat and soak (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario; the table keeps the best")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of the whole set")
    parser.add_argument("--out", default="", help="output folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the servers' work folders")
    parser.add_argument("--server-tree", default="",
                        help="run the tigasepy server from this source folder (e.g. a `git archive` of a commit)")
    parser.add_argument("--archive", action="store_true",
                        help="keep tigasepy's message archive (MAM) on; the peers have none configured")
    args = parser.parse_args(argv)
    ARCHIVE[0] = args.archive
    if args.server_tree:
        SERVER_TREE[0] = Path(args.server_tree).resolve()
    if args.quick:
        args.users, args.pairs, args.chat_duration, args.presence_users = 100, 10, 3.0, 10
        args.soak_rate, args.soak_duration, args.rtt_duration = 100.0, 5.0, 3.0
    out = Path(args.out or tempfile.mkdtemp(prefix="tigasepy-bench-")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tigasepy-bench-work-"))
    os.chmod(work, 0o755)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    versions: dict[str, str] = {}
    for name in [s.strip() for s in args.servers.split(",") if s.strip()]:
        cls, binary = SERVERS[name]
        if binary and shutil.which(binary) is None:
            print(f"{name}: not installed ({binary} not found), skipped", flush=True)
            continue
        server = cls(work)
        print(f"{name}: starting on 127.0.0.1:{server.port} with {args.users} accounts", flush=True)
        try:
            server.start(max(args.users, 2 * args.pairs, args.presence_users))
            versions[name] = server.version()
            results[name] = {}
            for tag in range(args.repeat):
                for scenario, argv_ in scenarios(args):
                    if scenario == "idle" and tag:
                        continue        # RSS per connection is only meaningful on a fresh server
                    if scenario == "rtt":
                        argv_ = rtt_argv(args, results[name].get("chat", []))
                        if argv_ is None:
                            continue
                    report = run_tool(server, scenario, argv_, out, str(tag))
                    results[name].setdefault(scenario, []).append(report)
        except Exception as e:
            print(f"{name}: failed: {e}", flush=True)
        finally:
            server.stop()
    text = table(results, versions)
    machine = f"{os.cpu_count()} CPUs, {os.uname().release}"
    commands = " ".join(["benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])])
    (out / "table.md").write_text(f"<!-- {commands}; {machine} -->\n" + text)
    print()
    print(text)
    print(f"results in {out}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
