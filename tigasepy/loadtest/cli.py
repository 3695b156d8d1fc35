"""``tigasepy loadtest`` / ``python -m tigasepy.loadtest``: the command line of the load generator.

The admin console mounts it with ``add_parser(subparsers)``, which registers a
``loadtest`` command whose ``func`` default is ``run(args) -> int``; ``main(argv)``
is the stand-alone entry point. Targets must be loopback addresses: this tool
generates load, and it refuses to aim it anywhere but at this machine.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
import time
from typing import Any, Sequence

from tigasepy.loadtest.client import ClientSettings
from tigasepy.loadtest.scenarios import RunSpec

DESCRIPTION = ("XMPP load, soak and benchmark generator (STARTTLS + SCRAM like real clients, or --plain). "
               "Accounts are <user-pattern>@<domain>, numbered from --first-user. Loopback targets only.")


class UsageError(Exception):
    """A bad command line (reported as one line, exit code 2)."""


def _common(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("target")
    g.add_argument("--host", default="127.0.0.1", help="server address; loopback only (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=5222, help="client port (default 5222)")
    g.add_argument("--domain", default="localhost", help="XMPP domain of the accounts (default localhost)")
    g.add_argument("--plain", action="store_true",
                   help="no TLS and SASL PLAIN, to isolate the XML cost (the server must allow it; "
                        "tigasepy: c2s.tls_required=false, c2s.allow_plain_without_tls=true)")
    g.add_argument("--no-tls", action="store_true", help="skip STARTTLS but still use SCRAM")
    g.add_argument("--mechanism", default=None,
                   help="force a SASL mechanism (SCRAM-SHA-1, SCRAM-SHA-256, PLAIN); default: the best offered")
    g.add_argument("--server-pid", default="",
                   help="PID(s) of the server to sample RSS/CPU from /proc, comma separated, or 'auto' "
                        "(the process listening on --port)")
    a = parser.add_argument_group("accounts")
    a.add_argument("--user-pattern", default="user{n}", help="account localpart pattern (default user{n})")
    a.add_argument("--password-pattern", default="password",
                   help="password pattern, {n} is the account number (default: password)")
    a.add_argument("--first-user", type=int, default=1, help="first account number (default 1)")
    a.add_argument("--resource", default="lt", help="resource prefix (default lt)")
    r = parser.add_argument_group("run")
    r.add_argument("--concurrency", type=int, default=100, help="logins in flight at once (default 100)")
    r.add_argument("--workers", type=int, default=1, help="client processes, each with its own reactor (default 1)")
    r.add_argument("--source-addresses", default="",
                   help="comma-separated loopback source addresses (127.0.0.2,...) to pass 64k connections")
    r.add_argument("--connect-timeout", type=float, default=10.0, help="TCP connect timeout, s (default 10)")
    r.add_argument("--login-timeout", type=float, default=30.0, help="whole-login timeout, s (default 30)")
    r.add_argument("--timeout", type=float, default=0.0,
                   help="hard deadline for the whole run, s (default: duration + a setup allowance)")
    o = parser.add_argument_group("output")
    o.add_argument("--json", metavar="FILE", help="write the full result as JSON")
    o.add_argument("--report", metavar="DIR", help="write report.html (+ report.png with matplotlib) into DIR")
    o.add_argument("--quiet", action="store_true", help="print only the summary line")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the load-test scenarios and their options to ``parser``."""
    sub = parser.add_subparsers(dest="scenario", metavar="SCENARIO", required=True)

    p = sub.add_parser("login", help="login storm: logins/s and login latency")
    _common(p)
    p.add_argument("--users", type=int, default=1000, help="accounts to use (default 1000)")
    p.add_argument("--logins", type=int, default=0, help="logins to make (default: one per account)")
    p.add_argument("--hold", action="store_true", help="keep the sessions open instead of closing each")
    p.add_argument("--no-warm-cache", action="store_true",
                   help="skip the unmeasured first login per account (then PBKDF2 in the client is measured too)")

    p = sub.add_parser("idle", help="hold N sessions: server RSS per connection")
    _common(p)
    p.add_argument("--users", type=int, default=1000, help="sessions to hold (default 1000)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds to hold after login (default 5)")
    p.add_argument("--settle", type=float, default=2.0, help="seconds after the last login before RSS is read")

    for name, helptext in (("chat", "pairs in a closed loop: delivered msgs/s and round trip"),
                           ("soak", "fixed message rate for a bounded time: loss, duplicates, RSS/CPU drift")):
        p = sub.add_parser(name, help=helptext)
        _common(p)
        p.add_argument("--pairs", type=int, default=50 if name == "chat" else 100, help="client pairs")
        p.add_argument("--duration", type=float, default=10.0 if name == "chat" else 60.0,
                       help="measured seconds")
        p.add_argument("--warmup", type=float, default=1.0 if name == "chat" else 10.0,
                       help="seconds before measuring (chat) / ignored by the RSS drift (soak)")
        p.add_argument("--grace", type=float, default=3.0, help="seconds to wait for messages in flight")
        p.add_argument("--body-size", type=int, default=64, help="message body bytes (default 64)")
        p.add_argument("--missing", type=int, default=0,
                       help="also send this many messages to an account that does not exist (checks that "
                            "the loss accounting sees them)")
        if name == "chat":
            p.add_argument("--window", type=int, default=10, help="messages in flight per client (default 10)")
        else:
            p.add_argument("--rate", type=float, default=500.0, help="messages/s in total (default 500)")
            p.add_argument("--echo", action="store_true",
                           help="receivers send every message back; the latency is then the round trip "
                                "(the server carries twice the rate)")

    p = sub.add_parser("presence", help="presence fan-out over rosters of mutual contacts")
    _common(p)
    p.add_argument("--users", type=int, default=50, help="users, each with all the others as contacts (default 50)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of broadcasts (default 10)")
    p.add_argument("--interval", type=float, default=0.1, help="seconds between broadcasts (default 0.1)")
    p.add_argument("--grace", type=float, default=3.0, help="seconds to wait for the last broadcast")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``loadtest`` on an argparse subparsers object; its ``func`` default is ``run``."""
    parser = subparsers.add_parser("loadtest", help="generate XMPP load against a server on this machine",
                                   description=DESCRIPTION)
    configure(parser)
    parser.set_defaults(func=run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The stand-alone parser (``python -m tigasepy.loadtest``)."""
    parser = argparse.ArgumentParser(prog="python -m tigasepy.loadtest", description=DESCRIPTION)
    configure(parser)
    return parser


def check_loopback(host: str, what: str = "--host") -> str:
    """The numeric loopback address ``host`` names.

    Raises:
        UsageError: ``host`` resolves to anything that is not a loopback address.
    """
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UsageError(f"{what} {host}: cannot resolve ({e})") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    for address in addresses:
        if not ipaddress.ip_address(address).is_loopback:
            raise UsageError(f"{what} {host} is {address}: this tool only targets loopback (127.0.0.0/8)")
    return addresses[0]


def find_listener_pid(port: int) -> int | None:
    """The PID of the process with a TCP socket listening on ``port`` (from /proc), or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        except OSError:
            continue
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                    return int(pid)
        except OSError:
            continue
    return None


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """The run described by the parsed command line.

    Raises:
        UsageError: a non-loopback target or source address, or bad numbers.
    """
    host = check_loopback(args.host)
    sources = tuple(check_loopback(s.strip(), "--source-addresses") for s in args.source_addresses.split(",")
                    if s.strip())
    if args.plain and args.mechanism and args.mechanism != "PLAIN":
        raise UsageError("--plain means SASL PLAIN; drop --mechanism")
    pids: tuple[int, ...] = ()
    if args.server_pid == "auto":
        pid = find_listener_pid(args.port)
        if pid is None:
            raise UsageError(f"--server-pid auto: nothing listens on port {args.port}")
        pids = (pid,)
    elif args.server_pid:
        try:
            pids = tuple(int(p) for p in args.server_pid.split(",") if p.strip())
        except ValueError:
            raise UsageError("--server-pid takes PIDs separated by commas, or 'auto'") from None
    settings = ClientSettings(
        host=host, port=args.port, domain=args.domain, tls=not (args.plain or args.no_tls),
        mechanism="PLAIN" if args.plain else args.mechanism, allow_plain=args.plain,
        resource=args.resource, connect_timeout_s=args.connect_timeout, login_timeout_s=args.login_timeout)
    scenario = args.scenario
    if scenario in ("chat", "soak"):
        count = 2 * args.pairs
    else:
        count = args.users
    if count < (2 if scenario in ("chat", "soak", "presence") else 1):
        raise UsageError("not enough users/pairs for this scenario")
    if args.concurrency < 1 or args.workers < 1:
        raise UsageError("--concurrency and --workers must be >= 1")
    users = tuple(range(args.first_user, args.first_user + count))
    kwargs: dict[str, Any] = dict(
        scenario=scenario, settings=settings, users=users, user_pattern=args.user_pattern,
        password_pattern=args.password_pattern, concurrency=args.concurrency,
        source_addresses=sources, server_pids=pids)
    if scenario == "login":
        kwargs.update(logins=args.logins, hold=args.hold, warm_cache=not args.no_warm_cache, duration_s=0.0)
    elif scenario == "idle":
        kwargs.update(duration_s=args.duration, settle_s=args.settle)
    elif scenario in ("chat", "soak"):
        kwargs.update(duration_s=args.duration, warmup_s=args.warmup, grace_s=args.grace,
                      body_size=args.body_size, missing=args.missing)
        if scenario == "chat":
            kwargs.update(window=args.window)
        else:
            kwargs.update(rate=args.rate, echo=args.echo)
    elif scenario == "presence":
        kwargs.update(duration_s=args.duration, presence_interval_s=args.interval, grace_s=args.grace)
    return RunSpec(**kwargs)


def default_deadline(spec: RunSpec) -> float:
    """A generous bound on a whole run: its duration plus time to log everyone in and drain."""
    logins = spec.logins or len(spec.users)
    return spec.duration_s + spec.warmup_s + spec.grace_s + spec.settle_s + 120.0 + 2 * logins / 100.0


def execute(spec: RunSpec, workers: int, deadline_s: float) -> dict[str, Any]:
    """Run ``spec`` (in this process with one worker, else in ``workers`` processes)."""
    from tigasepy.loadtest.runner import RunFailed, run_in_reactor, run_processes
    from tigasepy.loadtest.stats import raise_fd_limit

    raise_fd_limit()
    if workers > 1:
        return run_processes(spec, workers, deadline_s)
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    outcome: dict[str, Any] = {}

    def start() -> None:
        d = run_in_reactor(reactor, spec)
        d.addCallbacks(lambda r: outcome.setdefault("report", r), lambda f: outcome.setdefault("failure", f))
        d.addBoth(lambda _: reactor.stop() if reactor.running else None)

    def too_late() -> None:
        outcome.setdefault("failure", RunFailed(f"run deadline of {deadline_s:.0f}s passed"))
        reactor.stop()

    reactor.callWhenRunning(start)
    timer = reactor.callLater(deadline_s, too_late)
    reactor.run()
    if timer.active():
        timer.cancel()
    if "failure" in outcome:
        failure = outcome["failure"]
        if isinstance(failure, Exception):
            raise failure
        raise RunFailed(failure.getTraceback())
    return outcome["report"]


def verdict(report: dict[str, Any]) -> int:
    """The exit code: 0 for a clean run, 1 when something was lost, duplicated or failed."""
    f = report["figures"]
    missing = report["extra"].get("missing_sent", 0)
    counters = report["counters"]
    unexpected_errors = counters.get("errors", 0) - min(counters.get("errors.stanza", 0), missing)
    if f.get("lost", 0) != missing or f.get("duplicates", 0) or f.get("echoes_lost", 0) or unexpected_errors > 0:
        return 1
    if report["scenario"] == "login" and f.get("logins", 0) == 0:
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the load test the parsed ``args`` describe; returns the exit code."""
    from tigasepy.loadtest.report import summary_line, write_json, write_report
    from tigasepy.loadtest.runner import RunFailed

    try:
        spec = spec_from_args(args)
    except UsageError as e:
        print(f"tigasepy loadtest: {e}", file=sys.stderr)
        return 2
    deadline = args.timeout or default_deadline(spec)
    if not args.quiet:
        print(f"tigasepy loadtest {spec.scenario}: {len(spec.users)} accounts on {spec.settings.host}:"
              f"{spec.settings.port} ({spec.settings.domain}), {args.workers} worker(s), "
              f"{'STARTTLS' if spec.settings.tls else 'no TLS'}, deadline {deadline:.0f}s", file=sys.stderr)
    started = time.monotonic()
    try:
        report = execute(spec, args.workers, deadline)
    except RunFailed as e:
        print(f"tigasepy loadtest: run failed: {e}", file=sys.stderr)
        return 1
    if args.json:
        write_json(report, args.json)
    if args.report:
        for path in write_report(report, args.report):
            if not args.quiet:
                print(f"wrote {path}", file=sys.stderr)
    if not args.quiet and report["errors"]:
        print("error samples:\n  " + "\n  ".join(report["errors"][:5]), file=sys.stderr)
    print(summary_line(report) + f" [{time.monotonic() - started:.1f}s]")
    return verdict(report)


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point."""
    args = build_parser().parse_args(argv)
    return run(args)
