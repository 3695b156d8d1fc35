"""The load-test tool against a real tigasepy over loopback sockets (seconds, not minutes).

The server is ``build_service`` on the test reactor with memory storage and free
ports; accounts come from ``tigasepy.loadtest.accounts.bulk_create``. Each scenario
runs once, small, through the same code the command line uses.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, threads

from tigasepy.config import config_from_dict
from tigasepy.loadtest import cli
from tigasepy.loadtest.accounts import bulk_create
from tigasepy.loadtest.client import ClientSettings
from tigasepy.loadtest.report import summary_line, write_report
from tigasepy.loadtest.runner import run_in_reactor, run_processes
from tigasepy.loadtest.scenarios import RunSpec
from tigasepy.service import build_service
from tigasepy.storage.interfaces import IAccountStore

DOMAIN = "localhost"
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A started tigasepy with ``users`` accounts user1..userN (password ``password``)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    @property
    def port(self) -> int:
        return self.service.listener("c2s").port.getHost().port


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    """c2s options merged over the defaults (plain text allowed by default: fast tests)."""
    return {"tls_required": False, "allow_plain_without_tls": True}


@pytest.fixture
def server(tmp_path: Path, server_overrides: dict[str, Any]) -> Any:
    """A tigasepy server on a free loopback port with 40 accounts."""
    from twisted.internet import reactor

    config = config_from_dict({
        "server": {"domains": [DOMAIN], "data_dir": str(tmp_path / "data")},
        "c2s": {"interface": "127.0.0.1", "port": _free_port(), "direct_tls_port": 0, **server_overrides},
        "storage": {"backend": "memory"},
        "auth": {"scram_iterations": 4096},
        "s2s": {"enabled": False},
    })
    service = build_service(config, reactor)

    @defer.inlineCallbacks
    def start() -> Any:
        service.startService()
        yield service.started
        yield bulk_create(service.stores.get(IAccountStore), DOMAIN, range(1, 41))

    pytest_twisted.blockon(start())
    yield Server(service)
    pytest_twisted.blockon(defer.maybeDeferred(service.stopService))


def _spec(server: Server, scenario: str, users: int, **kw: Any) -> RunSpec:
    plain = kw.pop("plain", True)
    settings = ClientSettings(port=server.port, domain=DOMAIN, tls=not plain,
                              mechanism=kw.pop("mechanism", "PLAIN" if plain else None),
                              allow_plain=plain, login_timeout_s=15.0)
    return RunSpec(scenario=scenario, settings=settings, users=tuple(range(1, users + 1)), **kw)


@pytest_twisted.inlineCallbacks
def test_login_storm_over_starttls_and_scram_logs_everyone_in(server: Server) -> Any:
    """Every account logs in over STARTTLS + SCRAM; the storm itself runs no PBKDF2."""
    report = yield run_in_reactor(server.service.reactor, _spec(
        server, "login", 10, plain=False, mechanism="SCRAM-SHA-256", concurrency=4, logins=20))
    f = report["figures"]
    assert (f["logins"], f["attempts"], f["errors"]) == (20, 20, 0)
    assert f["logins_per_s"] > 0 and f["login_p99_ms"] >= f["login_p50_ms"] > 0
    assert f["pbkdf2_during_storm"] == 0
    assert report["client"]["pbkdf2_derivations"] == 1   # one password, one shared salt
    assert cli.verdict(report) == 0


@pytest_twisted.inlineCallbacks
def test_wrong_password_is_counted_as_a_sasl_login_error(server: Server) -> Any:
    """A login the server refuses is an error of stage ``sasl``, not a hang."""
    report = yield run_in_reactor(server.service.reactor, _spec(
        server, "login", 3, password_pattern="wrong{n}", warm_cache=False))
    assert report["figures"]["logins"] == 0
    assert report["counters"]["errors.login.sasl"] == 3
    assert cli.verdict(report) == 1


@pytest_twisted.inlineCallbacks
def test_chat_measures_round_trips_without_loss(server: Server) -> Any:
    """Pairs exchange messages in a closed loop; every one comes back."""
    report = yield run_in_reactor(server.service.reactor, _spec(
        server, "chat", 6, window=3, duration_s=1.0, warmup_s=0.2, grace_s=2.0))
    f = report["figures"]
    assert f["pairs"] == 3 and f["delivered"] > 0 and f["msgs_per_s"] > 0
    assert (f["lost"], f["duplicates"], f["errors"]) == (0, 0, 0)
    assert f["p99_ms"] >= f["p50_ms"] > 0
    assert any(row.get("delivered") for row in report["timeline"])


@pytest_twisted.inlineCallbacks
def test_soak_counts_a_message_to_a_missing_account_as_lost(server: Server) -> Any:
    """A message the server cannot deliver is lost (and its error reply counted), nothing else is."""
    report = yield run_in_reactor(server.service.reactor, _spec(
        server, "soak", 4, rate=100.0, duration_s=1.0, grace_s=2.0, missing=1,
        server_pids=(os.getpid(),)))
    f = report["figures"]
    assert f["sent"] == f["delivered"] + 1
    assert (f["lost"], f["duplicates"]) == (1, 0)
    assert report["counters"]["errors.stanza"] == 1
    assert f["server_rss_max_kib"] > 0 and f["server_us_per_msg"] > 0
    assert cli.verdict(report) == 0                  # exactly the loss that was asked for


@pytest_twisted.inlineCallbacks
def test_soak_counts_a_dropped_message_as_lost(server: Server) -> Any:
    """The receiver's test hook drops one delivered message: the tool reports one lost."""
    report = yield run_in_reactor(server.service.reactor, _spec(
        server, "soak", 2, rate=50.0, duration_s=1.0, grace_s=1.0, drop_received=1))
    f = report["figures"]
    assert (f["lost"], f["duplicates"]) == (1, 0)
    assert f["sent"] == f["delivered"] + 1
    assert cli.verdict(report) == 1


@pytest_twisted.inlineCallbacks
def test_soak_with_echo_measures_round_trips_of_every_message(server: Server) -> Any:
    """--echo: every delivered message comes back to its sender, and the latency figures are
    those round trips (each longer than the one-way trip it contains)."""
    report = yield run_in_reactor(server.service.reactor, _spec(
        server, "soak", 4, rate=100.0, duration_s=1.0, grace_s=2.0, echo=True))
    f = report["figures"]
    assert f["sent"] == f["delivered"] == f["echoes"] > 0
    assert (f["lost"], f["duplicates"], f["echoes_lost"]) == (0, 0, 0)
    assert report["latency_ms"]["count"] == f["echoes"]
    assert f["p99_ms"] >= f["p50_ms"] > 0
    assert report["params"]["echo"] is True
    assert cli.verdict(report) == 0


@pytest_twisted.inlineCallbacks
def test_idle_reports_server_memory_per_connection(server: Server) -> Any:
    """Held sessions stay connected and RSS per connection is computed from /proc."""
    report = yield run_in_reactor(server.service.reactor, _spec(
        server, "idle", 20, duration_s=0.5, settle_s=0.2, server_pids=(os.getpid(),)))
    f = report["figures"]
    assert (f["connected"], f["still_connected"], f["errors"]) == (20, 20, 0)
    assert f["rss_before_kib"] > 0 and f["rss_after_kib"] > 0
    assert f["kib_per_connection"] is not None


@pytest_twisted.inlineCallbacks
def test_presence_broadcast_reaches_every_contact(server: Server) -> Any:
    """Rosters are completed over XMPP, then every broadcast reaches every contact."""
    report = yield run_in_reactor(server.service.reactor, _spec(
        server, "presence", 4, duration_s=0.5, presence_interval_s=0.1, grace_s=1.0))
    f = report["figures"]
    assert f["roster_complete"] is True and f["contacts_per_user"] == 3
    assert f["broadcasts"] > 0 and f["delivered"] == f["expected"] == 3 * f["broadcasts"]
    assert f["lost"] == 0


@pytest_twisted.inlineCallbacks
def test_two_worker_processes_add_up(server: Server) -> Any:
    """Two spawned workers each run half the pairs; the parent merges their counts."""
    spec = _spec(server, "chat", 4, window=2, duration_s=1.0, warmup_s=0.3, grace_s=2.0)
    report = yield threads.deferToThread(run_processes, spec, 2, 60.0)
    f = report["figures"]
    assert report["params"]["workers"] == 2
    assert f["pairs"] == 2 and f["delivered"] > 0 and (f["lost"], f["duplicates"]) == (0, 0)


@pytest_twisted.inlineCallbacks
def test_command_line_runs_and_writes_json_and_report(server: Server, tmp_path: Path) -> Any:
    """``python -m tigasepy.loadtest`` prints one summary line and writes its files."""
    out = tmp_path / "run.json"
    argv = [sys.executable, "-m", "tigasepy.loadtest", "login", "--port", str(server.port), "--plain",
            "--users", "5", "--concurrency", "2", "--quiet", "--json", str(out),
            "--report", str(tmp_path / "report"), "--timeout", "60"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = yield threads.deferToThread(subprocess.run, argv, capture_output=True, text=True, timeout=90,
                                       env=env, cwd=str(REPO))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("login: 5/5 ok")
    assert out.exists() and (tmp_path / "report" / "report.html").exists()


def test_non_loopback_targets_are_refused() -> None:
    """The tool only aims at this machine."""
    parser = cli.build_parser()
    for argv in (["chat", "--host", "192.0.2.1"], ["login", "--source-addresses", "127.0.0.2,10.0.0.1"]):
        with pytest.raises(cli.UsageError, match="loopback"):
            cli.spec_from_args(parser.parse_args(argv))
    assert cli.run(parser.parse_args(["idle", "--host", "8.8.8.8"])) == 2
    spec = cli.spec_from_args(parser.parse_args(["login", "--host", "127.0.0.3", "--users", "2"]))
    assert spec.settings.host == "127.0.0.3"


def test_admin_cli_can_mount_loadtest() -> None:
    """``add_parser`` registers a ``loadtest`` command whose ``func`` is ``run``."""
    import argparse

    top = argparse.ArgumentParser(prog="tigasepy")
    add_parser_result = cli.add_parser(top.add_subparsers(dest="command"))
    args = top.parse_args(["loadtest", "chat", "--pairs", "3", "--window", "2"])
    assert add_parser_result.prog.endswith("loadtest") and args.func is cli.run
    assert (args.scenario, args.pairs, args.window) == ("chat", 3, 2)


def test_report_files_and_summary_from_a_result(tmp_path: Path) -> None:
    """A result dict becomes a summary line, an HTML page, and a PNG when matplotlib is there."""
    from tigasepy.loadtest.runner import aggregate

    spec = RunSpec(scenario="chat", settings=ClientSettings(), users=(1, 2), duration_s=1.0)
    worker = {"worker": 0, "scenario": "chat", "counters": {"delivered": 10, "pairs": 1, "sent": 5},
              "latency": {"b": {500: 10}, "n": 10, "t": 0.01, "m": 0.002},
              "login_latency": {"b": {}, "n": 0, "t": 0.0, "m": 0.0},
              "timeline": {0: {"c": {"delivered": 10}, "h": {"b": {500: 10}, "n": 10, "t": 0.01, "m": 0.002}}},
              "extra": {}, "errors": [], "samples": [{"t": 1.0, "rss_kib": 1000, "cpu_pct": 50.0,
                                                      "client_cpu_pct": 10.0, "connected": 2}],
              "measure_begin": 10.0, "measure_end": 11.0, "start": 9.5, "client_cpu_s": 0.1,
              "pbkdf2_derivations": 0, "pbkdf2_cache_hits": 0}
    report = aggregate(spec, [worker], 2.0, workers=1)
    assert report["figures"]["msgs_per_s"] == 10.0
    assert summary_line(report).startswith("chat: 1 pairs x window 1: 10.0 msgs/s")
    written = {p.name for p in write_report(report, tmp_path)}
    assert {"report.html", "report.json"} <= written
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert "report.png" in written


@pytest_twisted.inlineCallbacks
def test_connections_come_from_the_given_source_addresses(server: Server) -> Any:
    """``source_addresses`` are bound round-robin (what lets a run pass 64k connections)."""
    seen: list[str] = []
    connections = server.service.c2s_connections

    def peers() -> None:
        seen.extend(stream.transport.getPeer().host for stream in connections)

    spec = _spec(server, "idle", 4, duration_s=0.3, settle_s=0.1,
                 source_addresses=("127.0.0.2", "127.0.0.3"))
    d = run_in_reactor(server.service.reactor, spec)
    from twisted.internet import reactor, task

    yield task.deferLater(reactor, 0.25, peers)
    report = yield d
    assert report["figures"]["connected"] == 4
    assert sorted(set(seen)) == ["127.0.0.2", "127.0.0.3"]
