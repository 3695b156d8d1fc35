"""Running a scenario in one or several worker processes, and merging what they measured.

With one worker the scenario runs in the caller's reactor (this is what the tests
and embedders use: ``run_in_reactor``). With K workers (``run_processes``) each
worker is a fresh process (multiprocessing "spawn": no reactor state is inherited)
running its own reactor over a slice of the accounts; the parent relays phase
barriers ("gates") between them, samples nothing itself, enforces the overall
deadline and merges the results with ``aggregate``.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any

from twisted.internet import defer

from tigasepy.loadtest.scenarios import RunSpec, run_worker
from tigasepy.loadtest.stats import Histogram, Timeline


_SUMMED_EXTRAS = ("missing_sent", "subscription_requests", "pbkdf2_during_storm", "warm_errors",
                  "achieved_send_rate")


class RunFailed(Exception):
    """A worker crashed, or the run passed its deadline."""


def split(spec: RunSpec, workers: int) -> list[RunSpec]:
    """One spec per worker: accounts (whole pairs for chat/soak), logins and rate divided."""
    workers = max(1, workers)
    users = list(spec.users)
    if spec.scenario in ("chat", "soak"):
        units = [users[i:i + 2] for i in range(0, len(users) - 1, 2)]
    else:
        units = [[u] for u in users]
    if spec.scenario == "presence":
        workers = 1                      # every contact must see every broadcast: one process
    workers = min(workers, max(1, len(units)))
    specs = []
    total_logins = spec.logins or len(users)
    offset = 0
    for w in range(workers):
        part = units[w * len(units) // workers:(w + 1) * len(units) // workers]
        mine = tuple(u for unit in part for u in unit)
        logins = total_logins * len(part) // max(len(units), 1) if spec.logins else 0
        specs.append(dataclasses.replace(
            spec, users=mine, logins=logins, worker=w, index_offset=offset,
            rate=spec.rate * len(part) / max(len(units), 1),
            missing=spec.missing if w == 0 else 0,
            sample_server=(w == 0)))
        offset += logins or len(mine)
    return specs


def run_in_reactor(reactor: Any, spec: RunSpec) -> "defer.Deferred[dict[str, Any]]":
    """Run ``spec`` as a single worker in ``reactor``; fires with the aggregated result."""
    started = time.monotonic()
    d = run_worker(reactor, dataclasses.replace(spec, worker=0, sample_server=True))
    return d.addCallback(lambda r: aggregate(spec, [r], time.monotonic() - started, workers=1))


def _child(spec: RunSpec, conn: Connection) -> None:
    """Worker process body: its own reactor, gates over ``conn``."""
    from twisted.internet import reactor as global_reactor, threads
    from tigasepy.loadtest.stats import raise_fd_limit

    reactor: Any = global_reactor

    raise_fd_limit()
    reactor.suggestThreadPoolSize(2)

    def gate(name: str) -> defer.Deferred:
        conn.send(("gate", name))
        return threads.deferToThread(conn.recv)

    def done(result: Any) -> None:
        conn.send(("result", result))

    def failed(failure: Any) -> None:
        conn.send(("error", failure.getTraceback()))

    def start() -> None:
        d = run_worker(reactor, spec, gate)
        d.addCallbacks(done, failed)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    try:
        reactor.run(installSignalHandlers=False)
    except Exception:
        conn.send(("error", traceback.format_exc()))


def run_processes(spec: RunSpec, workers: int, deadline_s: float) -> dict[str, Any]:
    """Run ``spec`` over ``workers`` processes; returns the aggregated result.

    Raises:
        RunFailed: a worker failed, or the run took longer than ``deadline_s``.
    """
    specs = split(spec, workers)
    ctx = multiprocessing.get_context("spawn")
    pipes: list[Connection] = []
    procs = []
    for s in specs:
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(target=_child, args=(s, child_end), name=f"loadtest-worker-{s.worker}", daemon=True)
        proc.start()
        child_end.close()
        pipes.append(parent_end)
        procs.append(proc)
    started = time.monotonic()
    results: dict[int, Any] = {}
    waiting: dict[Any, set[int]] = {}
    alive = {i: c for i, c in enumerate(pipes)}
    try:
        while len(results) < len(specs):
            if time.monotonic() - started > deadline_s:
                raise RunFailed(f"run deadline of {deadline_s:.0f}s passed")
            for ready in wait(list(alive.values()), timeout=1.0):
                conn: Any = ready
                i = pipes.index(conn)
                try:
                    kind, payload = conn.recv()
                except EOFError:
                    raise RunFailed(f"worker {i} exited without a result") from None
                if kind == "gate":
                    arrived = waiting.setdefault(payload, set())
                    arrived.add(i)
                    if len(arrived) == len(specs):
                        for c in pipes:
                            c.send("go")
                        del waiting[payload]
                elif kind == "result":
                    results[i] = payload
                    del alive[i]
                else:
                    raise RunFailed(f"worker {i} failed:\n{payload}")
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
    return aggregate(spec, [results[i] for i in sorted(results)], time.monotonic() - started, workers=len(specs))


def _pct(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def aggregate(spec: RunSpec, results: list[dict[str, Any]], wall_s: float, workers: int) -> dict[str, Any]:
    """Merge worker results into the run's report dict (what ``--json`` writes)."""
    counters: dict[str, int] = {}
    latency = Histogram()
    login_latency = Histogram()
    errors: list[str] = []
    for r in results:
        for k, v in r["counters"].items():
            counters[k] = counters.get(k, 0) + v
        latency.merge(Histogram.from_dict(r["latency"]))
        login_latency.merge(Histogram.from_dict(r["login_latency"]))
        errors.extend(r["errors"])
    base = min(r["start"] for r in results)
    begins = [r["measure_begin"] for r in results if r["measure_begin"] is not None]
    ends = [r["measure_end"] for r in results if r["measure_end"] is not None]
    measured_s = (max(ends) - min(begins)) if begins and ends else None
    window = (min(begins) - base, max(ends) - base) if begins and ends else None
    # Worker timelines are relative to each worker's own start: shift to the earliest.
    shifted = []
    for r in results:
        delta = int(round(r["start"] - base))
        shifted.append({int(k) + delta: v for k, v in r["timeline"].items()})
    seconds = Timeline.merge_dicts(shifted)
    timeline = []
    for index in sorted(seconds):
        s = seconds[index]
        row: dict[str, Any] = {"t": index}
        row.update(s.counters)
        if s.latency.count:
            row["p50_ms"] = round((s.latency.percentile(50) or 0) * 1000, 3)
            row["p99_ms"] = round((s.latency.percentile(99) or 0) * 1000, 3)
        timeline.append(row)
    samples = [s for r in results if r["worker"] == 0 for s in r["samples"]]
    client_cpu = sum(r["client_cpu_s"] for r in results)
    # Worker 0 sampled the server; counts that every worker kept are summed.
    extra = dict(results[0]["extra"]) if results else {}
    for r in results[1:]:
        for k in _SUMMED_EXTRAS:
            if k in r["extra"]:
                extra[k] = extra.get(k, 0) + r["extra"][k]
    report: dict[str, Any] = {
        "tool": "tigasepy loadtest",
        "scenario": spec.scenario,
        "target": {"host": spec.settings.host, "port": spec.settings.port, "domain": spec.settings.domain,
                   "tls": spec.settings.tls, "mechanism": spec.settings.mechanism},
        "params": {"users": len(spec.users), "logins": spec.logins or len(spec.users),
                   "concurrency": spec.concurrency, "duration_s": spec.duration_s, "window": spec.window,
                   "rate": spec.rate, "echo": spec.echo, "body_size": spec.body_size, "workers": workers,
                   "source_addresses": list(spec.source_addresses), "server_pids": list(spec.server_pids)},
        "wall_s": round(wall_s, 3),
        "measured_s": round(measured_s, 3) if measured_s is not None else None,
        "measure_window_s": [round(window[0], 3), round(window[1], 3)] if window else None,
        "server_cpu_measured_s": next((r.get("server_cpu_measured_s") for r in results
                                       if r["worker"] == 0), None),
        "counters": counters,
        "latency_ms": latency.summary_ms(),
        "login_latency_ms": login_latency.summary_ms(),
        "extra": extra,
        "errors": errors[:20],
        "timeline": timeline,
        "samples": samples,
        "client": {"cpu_s": round(client_cpu, 3), "workers": workers,
                   "cpu_pct_per_worker": round(100.0 * client_cpu / max(wall_s, 1e-9) / workers, 1),
                   "pbkdf2_derivations": sum(r["pbkdf2_derivations"] for r in results),
                   "pbkdf2_cache_hits": sum(r["pbkdf2_cache_hits"] for r in results)},
    }
    report["figures"] = _figures(report, spec, latency, login_latency, measured_s, Histogram.from_dict(
        extra["fanout_complete"]) if "fanout_complete" in extra else None)
    return report


def _figures(report: dict[str, Any], spec: RunSpec, latency: Histogram, login_latency: Histogram,
             measured_s: float | None, fanout: Histogram | None) -> dict[str, Any]:
    """The headline numbers of the run (what the summary line and the tables show)."""
    c = report["counters"]
    f: dict[str, Any] = {"errors": c.get("errors", 0)}
    samples = report["samples"]
    # CPU figures cover the measured window only (a sample at t covers the second before t).
    span = report.get("measure_window_s")
    measured = [s for s in samples if span is None or span[0] + 0.5 <= s["t"] <= span[1] + 0.5] or samples
    server_cpu = [s["cpu_pct"] for s in measured if s.get("cpu_pct") is not None]
    if server_cpu:
        f["server_cpu_pct"] = _pct(server_cpu)
    client_cpu = [s["client_cpu_pct"] for s in measured if s.get("client_cpu_pct") is not None]
    f["client_cpu_pct"] = _pct(client_cpu) if client_cpu else report["client"]["cpu_pct_per_worker"]
    f["client_bound"] = bool((f["client_cpu_pct"] or 0) >= 85.0)
    server_cpu_s = report.get("server_cpu_measured_s")
    load = [s["loadavg"] for s in measured if s.get("loadavg") is not None]
    if load:
        f["loadavg"] = max(load)
        # More runnable processes than CPUs: the server was not getting a whole core.
        f["machine_busy"] = max(load) > (os.cpu_count() or 1)
    rss = [s["rss_kib"] for s in samples if s.get("rss_kib")]
    if rss:
        f["server_rss_max_kib"] = max(rss)
    seconds = measured_s or 0.0
    if spec.scenario == "login":
        ok = c.get("logins", 0)
        f.update(logins=ok, attempts=c.get("attempts", 0),
                 logins_per_s=round(ok / seconds, 1) if seconds else None,
                 login_p50_ms=login_latency.summary_ms()["p50"], login_p99_ms=login_latency.summary_ms()["p99"],
                 pbkdf2_during_storm=report["extra"].get("pbkdf2_during_storm"),
                 server_ms_per_login=round(1000 * server_cpu_s / ok, 3) if server_cpu_s and ok else None)
    elif spec.scenario == "idle":
        before = report["extra"].get("rss_before_kib")
        after = report["extra"].get("rss_after_kib")
        n = c.get("connected", 0)
        f.update(connected=n, still_connected=c.get("still_connected", 0),
                 rss_before_kib=before, rss_after_kib=after,
                 kib_per_connection=round((after - before) / n, 2) if before and after and n else None,
                 login_p50_ms=login_latency.summary_ms()["p50"], login_p99_ms=login_latency.summary_ms()["p99"])
    elif spec.scenario in ("chat", "soak"):
        delivered = c.get("delivered", 0) if spec.scenario == "chat" else c.get("received", 0)
        s = latency.summary_ms()
        f.update(pairs=c.get("pairs", 0), sent=c.get("sent", 0), delivered=delivered,
                 lost=c.get("lost", 0), duplicates=c.get("duplicates", 0),
                 msgs_per_s=round(delivered / seconds, 1) if seconds and spec.scenario == "chat" else None,
                 p50_ms=s["p50"], p99_ms=s["p99"], max_ms=s["max"],
                 server_us_per_msg=round(1e6 * server_cpu_s / (delivered + c.get("echoes", 0)), 1)
                 if server_cpu_s and delivered else None)
        if spec.scenario == "soak":
            f["rate"] = spec.rate
            achieved = report["extra"].get("achieved_send_rate")
            f["achieved_send_rate"] = round(achieved, 1) if achieved is not None else None
            f["rss_drift_pct"] = rss_drift(samples, spec)
            if spec.echo:
                f["echoes"] = c.get("echoes", 0)
                f["echoes_lost"] = max(c.get("received", 0) - c.get("echoes", 0), 0)
    elif spec.scenario == "presence":
        s = latency.summary_ms()
        f.update(broadcasts=c.get("broadcasts", 0), expected=c.get("sent", 0), delivered=c.get("delivered", 0),
                 lost=c.get("lost", 0), contacts_per_user=report["extra"].get("contacts_per_user"),
                 roster_complete=report["extra"].get("roster_complete"),
                 p50_ms=s["p50"], p99_ms=s["p99"],
                 fanout_p50_ms=fanout.summary_ms()["p50"] if fanout else None,
                 fanout_p99_ms=fanout.summary_ms()["p99"] if fanout else None)
    return f


def rss_drift(samples: list[dict[str, Any]], spec: RunSpec) -> float | None:
    """RSS change in percent between the warmed-up start and the end of a soak.

    The reference is the mean RSS over the first tenth of the run after warm-up;
    the end is the mean over the last tenth.
    """
    points = [(s["t"], s["rss_kib"]) for s in samples if s.get("rss_kib")]
    if len(points) < 4:
        return None
    t0, t1 = points[0][0], points[-1][0]
    warm = t0 + max(spec.warmup_s, 0.1 * (t1 - t0))
    span = max(0.1 * (t1 - warm), 1.0)
    first = [r for t, r in points if warm <= t <= warm + span]
    last = [r for t, r in points if t >= t1 - span]
    if not first or not last:
        return None
    a, b = sum(first) / len(first), sum(last) / len(last)
    return round(100.0 * (b - a) / a, 2)
