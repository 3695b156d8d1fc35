"""Measurements: mergeable latency histograms, per-second timelines and /proc sampling.

Latencies go into ``Histogram``: logarithmic buckets 1% wide, so memory is bounded
however long a soak runs, percentiles are within 1%, and worker processes' histograms
add up exactly. ``Timeline`` keeps per-second counters and histograms for the plots.
``ProcSampler`` reads a server's RSS (``/proc/PID/status`` VmRSS) and CPU time
(``/proc/PID/stat`` utime + stime) once a second.
"""

from __future__ import annotations

import math
import os
import resource
from dataclasses import dataclass, field
from typing import Any, Iterable

_RATIO = 1.01
_LOG_RATIO = math.log(_RATIO)
_MIN_S = 1e-6


class Histogram:
    """Counts of latencies (seconds) in 1%-wide logarithmic buckets, from 1 us up."""

    __slots__ = ("buckets", "count", "total", "max")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        """Record one latency."""
        index = int(math.log(seconds / _MIN_S) / _LOG_RATIO) if seconds > _MIN_S else 0
        buckets = self.buckets
        buckets[index] = buckets.get(index, 0) + 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def merge(self, other: "Histogram") -> None:
        """Add ``other``'s counts to this one."""
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def percentile(self, p: float) -> float | None:
        """The ``p``-th percentile (0..100) in seconds, None when empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(self.count * p / 100.0))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(_MIN_S * _RATIO ** (index + 0.5), self.max) if index else _MIN_S
        return self.max

    def mean(self) -> float | None:
        """The mean in seconds, None when empty."""
        return self.total / self.count if self.count else None

    def summary_ms(self) -> dict[str, float | int | None]:
        """count, mean, p50, p90, p99, p99.9 and max in milliseconds."""
        def ms(v: float | None) -> float | None:
            return None if v is None else round(v * 1000.0, 3)
        return {"count": self.count, "mean": ms(self.mean()), "p50": ms(self.percentile(50)),
                "p90": ms(self.percentile(90)), "p99": ms(self.percentile(99)),
                "p999": ms(self.percentile(99.9)), "max": ms(self.max if self.count else None)}

    def to_dict(self) -> dict[str, Any]:
        """A JSON/pickle-friendly form."""
        return {"b": self.buckets, "n": self.count, "t": self.total, "m": self.max}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Histogram":
        """The inverse of ``to_dict``."""
        h = cls()
        h.buckets = {int(k): v for k, v in data["b"].items()}
        h.count, h.total, h.max = data["n"], data["t"], data["m"]
        return h


@dataclass
class Second:
    """What happened during one second of a run."""

    counters: dict[str, int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=Histogram)


class Timeline:
    """Per-second counters and latency histograms, relative to a start time (monotonic)."""

    def __init__(self, start: float, max_seconds: int = 7 * 24 * 3600) -> None:
        self.start = start
        self.max_seconds = max_seconds
        self.seconds: dict[int, Second] = {}

    def _at(self, now: float) -> Second:
        index = min(max(int(now - self.start), 0), self.max_seconds)
        second = self.seconds.get(index)
        if second is None:
            second = self.seconds[index] = Second()
        return second

    def count(self, now: float, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` in the second containing ``now``."""
        counters = self._at(now).counters
        counters[name] = counters.get(name, 0) + n

    def latency(self, now: float, seconds: float) -> None:
        """Record a latency in the second containing ``now``."""
        self._at(now).latency.add(seconds)

    def to_dict(self) -> dict[int, Any]:
        """A pickle-friendly form (merged by the parent across workers)."""
        return {i: {"c": s.counters, "h": s.latency.to_dict()} for i, s in self.seconds.items()}

    @staticmethod
    def merge_dicts(parts: Iterable[dict[int, Any]]) -> dict[int, Second]:
        """Merge the ``to_dict`` forms of several workers' timelines."""
        out: dict[int, Second] = {}
        for part in parts:
            for index, data in part.items():
                second = out.setdefault(int(index), Second())
                for name, n in data["c"].items():
                    second.counters[name] = second.counters.get(name, 0) + n
                second.latency.merge(Histogram.from_dict(data["h"]))
        return out


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def read_rss_kib(pid: int) -> int | None:
    """The resident set size of ``pid`` in KiB (VmRSS), None when unreadable."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds consumed by ``pid`` so far, None when unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        return None


class ProcSampler:
    """Samples RSS and CPU of the server process(es) (summed) at each ``sample`` call."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = list(pids)
        self.samples: list[dict[str, float | None]] = []
        self._last: tuple[float, float] | None = None

    def rss_kib(self) -> int | None:
        """The summed RSS now (None if any process is unreadable)."""
        total = 0
        for pid in self.pids:
            rss = read_rss_kib(pid)
            if rss is None:
                return None
            total += rss
        return total if self.pids else None

    def cpu_seconds(self) -> float | None:
        """The summed CPU seconds now."""
        total = 0.0
        for pid in self.pids:
            cpu = read_cpu_seconds(pid)
            if cpu is None:
                return None
            total += cpu
        return total if self.pids else None

    def sample(self, t: float) -> dict[str, float | None]:
        """Record RSS (KiB) and CPU use (percent of one core since the last sample) at ``t``."""
        rss = self.rss_kib()
        cpu = self.cpu_seconds()
        percent = None
        if cpu is not None and self._last is not None and t > self._last[0]:
            percent = round(100.0 * (cpu - self._last[1]) / (t - self._last[0]), 1)
        if cpu is not None:
            self._last = (t, cpu)
        entry = {"t": round(t, 3), "rss_kib": rss, "cpu_pct": percent}
        self.samples.append(entry)
        return entry


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_fd_limit() -> int:
    """Raise this process's open-file limit as far as allowed; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with open("/proc/sys/fs/nr_open") as f:
            wanted = int(f.read())
    except (OSError, ValueError):
        wanted = hard
    for target in (wanted, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(target, soft), max(target, hard)))
            return max(target, soft)
        except (ValueError, OSError):
            continue
    return soft
