#!/usr/bin/env python3
"""Hold many idle client connections on a split deployment and report the memory they cost.

One process holds at most as many connections as its file-descriptor limit allows (20,000
on the machine this was written on), so N connections are spread over K connection-manager
processes (``roles = ["c2s"]``, each with its own client port and ``[link] listen``) behind
one session manager (``roles = ["sm"]``, SQLite, ``[link] connect`` to all of them), the
split deployment of docs/deployment.md. One ``tigasepy loadtest idle`` process per
connection manager logs its slice of the accounts in (STARTTLS + SCRAM-SHA-1 unless
``--no-tls``) and holds the sessions; this script samples the established connections and
the RSS of every server process until every tool has finished.

    .venv/bin/python benchmarks/hold.py --connections 100000 --managers 6
    .venv/bin/python benchmarks/hold.py --connections 20000 --managers 2 --groups X25519,P-256

Loopback only; every stage has a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from split import ENV, PYTHON, REPO, Process, config_text, free_port, write_secret  # noqa: E402


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def established(port: int) -> int:
    """Established TCP connections whose local port is ``port`` (the server side)."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=False).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--managers", type=int, default=1, help="connection-manager processes")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds each tool holds after its last login")
    parser.add_argument("--concurrency", type=int, default=50, help="logins in flight per tool")
    parser.add_argument("--no-tls", action="store_true", help="plaintext + SCRAM (no STARTTLS)")
    parser.add_argument("--groups", default="", help="[tls] groups, comma-separated (default: OpenSSL's)")
    parser.add_argument("--deadline", type=float, default=1800.0, help="seconds for the whole run")
    args = parser.parse_args()
    per = args.connections // args.managers
    extra = ""
    if args.groups:
        extra = "\n[tls]\ngroups = " + json.dumps(args.groups.split(",")) + "\n"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tigasepy-hold-") as tmp:
        root = Path(tmp)
        secret = secrets.token_urlsafe(32)
        cms: list[Process] = []
        ports: list[int] = []
        link_ports = [free_port() for _ in range(args.managers)]
        for index, link_port in enumerate(link_ports):
            ports.append(free_port())
            data = root / f"cm{index + 1}" / "data"
            write_secret(data, secret)
            cms.append(Process(root / f"cm{index + 1}", config_text(
                data, ["c2s"], f'[link]\nlisten = "127.0.0.1:{link_port}"', ports[-1], tls=not args.no_tls)
                + extra))
        data = root / "sm" / "data"
        write_secret(data, secret)
        connect = json.dumps([f"127.0.0.1:{p}" for p in link_ports])
        sm = Process(root / "sm", config_text(data, ["sm"], f"[link]\nconnect = {connect}", 0) + extra)
        subprocess.run([PYTHON, str(REPO / "benchmarks" / "tigasepy_accounts.py"), str(sm.config),
                        str(per * args.managers)], check=True, env=ENV, cwd=sm.folder)
        servers = [sm, *cms]
        tools: list[tuple[subprocess.Popen, Path]] = []
        try:
            for process in cms:
                process.start()
            sm.start()
            for process in cms:
                process.wait_for("new link session")
            time.sleep(2)
            pids = {p.folder.name: p.proc.pid for p in servers if p.proc is not None}
            baseline = {name: rss_kib(pid) for name, pid in pids.items()}
            for index, port in enumerate(ports):
                out = root / f"idle-{index}.json"
                command = [PYTHON, "-m", "tigasepy.loadtest", "idle", "--port", str(port),
                           "--users", str(per), "--first-user", str(1 + index * per),
                           "--concurrency", str(args.concurrency), "--duration", str(args.hold),
                           "--timeout", str(args.deadline), "--json", str(out), "--quiet",
                           "--mechanism", "SCRAM-SHA-1"]
                if args.no_tls:
                    command.append("--no-tls")
                tools.append((subprocess.Popen(command, env=ENV, cwd=root), out))
            login_started = time.monotonic()
            best: dict[str, Any] = {"connections": 0}
            all_in = None
            while any(tool.poll() is None for tool, _ in tools):
                if time.monotonic() - started > args.deadline:
                    raise SystemExit("deadline passed")
                time.sleep(2)
                held = sum(established(port) for port in ports)
                if held >= best["connections"]:
                    best = {"connections": held, "rss": {name: rss_kib(pid) for name, pid in pids.items()}}
                if all_in is None and held >= per * args.managers:
                    all_in = time.monotonic() - login_started
                    print(f"all {held} connections established after {all_in:.0f} s", flush=True)
            reports = [json.loads(out.read_text()) if out.exists() else {} for _, out in tools]
        finally:
            for tool, _ in tools:
                if tool.poll() is None:
                    tool.kill()
            for process in servers:
                process.stop()
    errors = sum(r.get("figures", {}).get("errors", 0) for r in reports)
    growth = {name: best["rss"][name] - baseline[name] for name in baseline} if "rss" in best else {}
    cm_growth = sum(v for k, v in growth.items() if k.startswith("cm"))
    held = best["connections"]
    result = {
        "connections_held": held,
        "target": per * args.managers,
        "managers": args.managers,
        "tls": not args.no_tls,
        "groups": args.groups or "default",
        "seconds_to_establish_all": round(all_in) if all_in is not None else None,
        "tool_errors": errors,
        "rss_mib": {k: round(v / 1024, 1) for k, v in best.get("rss", {}).items()},
        "kib_per_connection_cm": round(cm_growth / held, 1) if held else None,
        "kib_per_connection_sm": round(growth.get("sm", 0) / held, 1) if held else None,
        "kib_per_connection_all": round(sum(growth.values()) / held, 1) if held else None,
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
