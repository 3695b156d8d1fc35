"""The load scenarios, each run by one worker inside a running reactor.

``run_worker(reactor, spec, gate)`` runs ``spec.scenario`` for the users of one
worker and returns a Deferred firing with a picklable result dict; ``runner.py``
merges the dicts of several worker processes. ``gate(name)`` is a barrier across
workers (a no-op with one worker) so that every phase starts everywhere at once.

Scenarios:

- ``login``: N logins with at most C in flight; logins/s and login latency.
- ``idle``: hold N authenticated sessions with initial presence; server RSS per
  connection from ``/proc/PID/status``.
- ``chat``: P pairs; each side keeps W messages in flight to its peer, which
  echoes them: delivered messages/s and round-trip latency.
- ``soak``: a fixed rate of one-way messages for a bounded time; every message
  carries ``<x xmlns='urn:tigasepy:loadtest' f= s= t=/>`` (sender, sequence number,
  send time), so the receiver counts lost, duplicated and late messages.
- ``presence``: a group of mutual contacts (set up over XMPP with subscription
  requests when the rosters are incomplete); time for a presence broadcast to
  reach every contact (RFC 6121 section 4.4).
"""

from __future__ import annotations

import gc
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable
from xml.sax.saxutils import quoteattr

from twisted.internet import defer, task
from twisted.python.failure import Failure

from tigasepy.loadtest.client import (
    NS_ROSTER, Q_MESSAGE, Q_PRESENCE, ClientSettings, LoadClient, LoginFailed, connect,
)
from tigasepy.loadtest.sasl import SaltedPasswordCache
from tigasepy.loadtest.stats import Histogram, ProcSampler, Timeline, own_cpu_seconds
from tigasepy.loadtest.xmlstream import Node

NS_LOADTEST = "urn:tigasepy:loadtest"
Q_MARK = f"{NS_LOADTEST} x"
_MAX_ERROR_SAMPLES = 10
_MAX_AHEAD = 100_000

SCENARIOS = ("login", "idle", "chat", "soak", "presence")

Gate = Callable[[str], defer.Deferred]


@dataclass(frozen=True)
class RunSpec:
    """Everything one worker needs (picklable: it crosses process boundaries)."""

    scenario: str
    settings: ClientSettings
    users: tuple[int, ...]                  # this worker's account numbers
    user_pattern: str = "user{n}"
    password_pattern: str = "password"
    logins: int = 0                         # login: logins for this worker (0: one per user)
    concurrency: int = 100                  # logins in flight at once
    duration_s: float = 10.0
    warmup_s: float = 1.0
    grace_s: float = 2.0
    settle_s: float = 2.0
    window: int = 1
    rate: float = 100.0                     # soak: messages/s sent by this worker
    body_size: int = 64
    hold: bool = False                      # login: keep sessions instead of closing each
    warm_cache: bool = True                 # login: an unmeasured login per account first
    source_addresses: tuple[str, ...] = ()
    server_pids: tuple[int, ...] = ()       # sampled by the worker with sample_server
    sample_server: bool = True
    missing: int = 0                        # soak/chat: messages sent to an account that doesn't exist
    drop_received: int = 0                  # test hook: receivers ignore this many messages
    echo: bool = False                      # soak: receivers send each message back; latency = round trip
    presence_interval_s: float = 0.1
    worker: int = 0
    index_offset: int = 0                   # global index of this worker's first connection


@dataclass
class Collector:
    """What a worker measured; ``result()`` is the picklable form."""

    spec: RunSpec
    start: float
    counters: dict[str, int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=Histogram)
    login_latency: Histogram = field(default_factory=Histogram)
    extra: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.timeline = Timeline(self.start)
        self.cpu_start = own_cpu_seconds()
        #: Reads the server's CPU seconds (None: not sampled); used at measure begin and end.
        self.cpu_probe: Callable[[], float | None] | None = None
        self._server_cpu: dict[str, float | None] = {}
        self._window: dict[str, float | None] = {"begin": None, "end": None}

    # Setting the measurement window also reads the server's CPU time at its edges, so
    # that CPU per message or per login can be reported (less sensitive to a busy machine
    # than throughput).
    @property
    def measure_begin(self) -> float | None:
        """Monotonic time the measured phase began."""
        return self._window["begin"]

    @measure_begin.setter
    def measure_begin(self, value: float | None) -> None:
        self._window["begin"] = value
        self._server_cpu["begin"] = self.cpu_probe() if self.cpu_probe and value is not None else None

    @property
    def measure_end(self) -> float | None:
        """Monotonic time the measured phase ended."""
        return self._window["end"]

    @measure_end.setter
    def measure_end(self, value: float | None) -> None:
        self._window["end"] = value
        self._server_cpu["end"] = self.cpu_probe() if self.cpu_probe and value is not None else None

    def server_cpu_measured(self) -> float | None:
        """Server CPU seconds spent in the measured phase (None when not sampled)."""
        begin, end = self._server_cpu.get("begin"), self._server_cpu.get("end")
        return round(end - begin, 3) if begin is not None and end is not None else None

    def count(self, name: str, n: int = 1) -> None:
        """Add to a run counter."""
        self.counters[name] = self.counters.get(name, 0) + n

    def error(self, kind: str, text: str) -> None:
        """Count an error of ``kind`` and keep a few examples."""
        self.count("errors")
        self.count(f"errors.{kind}")
        if len(self.errors) < _MAX_ERROR_SAMPLES:
            self.errors.append(f"{kind}: {text}")

    def result(self, cache: SaltedPasswordCache) -> dict[str, Any]:
        """The picklable result of this worker."""
        return {
            "worker": self.spec.worker, "scenario": self.spec.scenario,
            "counters": self.counters, "latency": self.latency.to_dict(),
            "login_latency": self.login_latency.to_dict(), "timeline": self.timeline.to_dict(),
            "extra": self.extra, "errors": self.errors, "samples": self.samples,
            "measure_begin": self.measure_begin, "measure_end": self.measure_end, "start": self.start,
            "client_cpu_s": own_cpu_seconds() - self.cpu_start,
            "server_cpu_measured_s": self.server_cpu_measured(),
            "pbkdf2_derivations": cache.derivations, "pbkdf2_cache_hits": cache.hits,
        }


class Worker:
    """Shared machinery: connecting, logging in many clients, sampling, sleeping."""

    def __init__(self, reactor: Any, spec: RunSpec, gate: Gate) -> None:
        self.reactor = reactor
        self.spec = spec
        self.gate = gate
        self.cache = SaltedPasswordCache()
        self.out = Collector(spec, time.monotonic())
        self.sampler = ProcSampler(list(spec.server_pids)) if spec.sample_server else None
        if self.sampler is not None and self.sampler.pids:
            self.out.cpu_probe = self.sampler.cpu_seconds
        self._sampling: task.LoopingCall | None = None
        self._next_index = spec.index_offset
        self.clients: list[LoadClient] = []
        self.measuring = False
        self.closing = False

    # -- helpers ------------------------------------------------------------------------
    def sleep(self, seconds: float) -> defer.Deferred:
        """A Deferred firing after ``seconds``."""
        return task.deferLater(self.reactor, max(seconds, 0.0), lambda: None)

    def username(self, n: int) -> str:
        """The localpart of account number ``n``."""
        return self.spec.user_pattern.format(n=n)

    def password(self, n: int) -> str:
        """The password of account number ``n``."""
        return self.spec.password_pattern.format(n=n)

    def start_sampling(self) -> None:
        """Sample server RSS/CPU and our own CPU once a second."""
        last = [time.monotonic(), own_cpu_seconds()]

        def sample() -> None:
            now = time.monotonic()
            cpu = own_cpu_seconds()
            entry: dict[str, Any] = {"t": round(now - self.out.start, 3)}
            if now - last[0] >= 0.5:
                entry["client_cpu_pct"] = round(100.0 * (cpu - last[1]) / (now - last[0]), 1)
            last[0], last[1] = now, cpu
            if self.sampler is not None and self.sampler.pids:
                server = self.sampler.sample(now - self.out.start)
                entry["rss_kib"] = server["rss_kib"]
                entry["cpu_pct"] = server["cpu_pct"]
            entry["connected"] = sum(1 for c in self.clients if c.is_ready)
            entry["loadavg"] = _loadavg()
            self.out.samples.append(entry)

        self._sampling = task.LoopingCall(sample)
        self._sampling.clock = self.reactor
        self._sampling.start(1.0, now=True)

    def stop_sampling(self) -> None:
        """Stop the once-a-second sampler."""
        if self._sampling is not None and self._sampling.running:
            self._sampling.stop()

    def connect_one(self, n: int, resource: str | None = None) -> LoadClient:
        """Start logging in account ``n`` (a new connection)."""
        index = self._next_index
        self._next_index += 1
        sources = self.spec.source_addresses
        source = sources[index % len(sources)] if sources else None
        return connect(self.reactor, self.spec.settings, self.username(n), self.password(n), self.cache,
                       source_address=source, resource=resource)

    def login_many(self, numbers: list[int], *, hold: bool = True, measure: bool = True,
                   resources: list[str] | None = None) -> defer.Deferred:
        """Log in ``numbers`` with at most ``spec.concurrency`` in flight.

        Fires with the list of logged-in clients (held) once every attempt ended.
        """
        semaphore = defer.DeferredSemaphore(max(1, self.spec.concurrency))
        held: list[LoadClient] = []
        out = self.out

        def one(i: int) -> defer.Deferred:
            client = self.connect_one(numbers[i], resources[i] if resources else None)
            d = client.ready

            def ok(c: LoadClient) -> None:
                now = time.monotonic()
                if measure:
                    out.login_latency.add(now - c.timings["start"])
                    out.timeline.count(now, "logins")
                    out.timeline.latency(now, now - c.timings["start"])
                    out.count("logins")
                if hold:
                    held.append(c)
                    self.clients.append(c)
                else:
                    c.close()

            def failed(f: Failure) -> None:
                now = time.monotonic()
                stage = f.value.stage if isinstance(f.value, LoginFailed) else "other"
                out.error(f"login.{stage}", f.getErrorMessage())
                if measure:
                    out.timeline.count(now, "login_errors")

            d.addCallbacks(ok, failed)
            return d

        runs = [semaphore.run(one, i) for i in range(len(numbers))]
        d = defer.DeferredList(runs, consumeErrors=True)
        return d.addCallback(lambda _: held)

    def watch_disconnects(self, clients: list[LoadClient]) -> None:
        """Count connections the server drops while the scenario runs."""
        for c in clients:
            c.closed.addCallback(self._lost, c)

    def _lost(self, why: str, client: LoadClient) -> None:
        if not self.closing:
            self.out.error("disconnect", f"{client.bare}: {why}")
            self.out.timeline.count(time.monotonic(), "disconnects")

    def close_all(self) -> defer.Deferred:
        """Close every held connection; fires when they are gone (bounded by 5 s)."""
        self.closing = True
        waits = []
        for c in self.clients:
            if not c.closed.called:
                waits.append(c.closed)
                c.close()
        d = defer.DeferredList(waits, consumeErrors=True)
        def abort_all() -> None:
            for c in self.clients:
                c.abort()

        timeout = self.reactor.callLater(5.0, abort_all)
        d.addBoth(lambda r: timeout.cancel() if timeout.active() else None)
        return d

    async def run(self) -> dict[str, Any]:
        """Run the scenario; always closes connections and stops sampling."""
        self.start_sampling()
        try:
            await getattr(self, f"_{self.spec.scenario}")()
        finally:
            self.stop_sampling()
            gc.unfreeze()        # the clients become garbage now (see freeze_garbage_collection)
            await self.close_all()
        return self.out.result(self.cache)

    # -- login storm ----------------------------------------------------------------------
    async def _login(self) -> None:
        spec = self.spec
        users = list(spec.users)
        count = spec.logins or len(users)
        numbers = [users[i % len(users)] for i in range(count)]
        resources = [f"{spec.settings.resource}{spec.index_offset + i}" for i in range(count)]
        if spec.warm_cache:
            # One unmeasured login per account: the SCRAM salts become known and the
            # PBKDF2 results cached, so the storm measures the server, not our PBKDF2.
            await self.login_many(users, hold=False, measure=False)
            self.out.extra["warm_errors"] = self.out.counters.pop("errors", 0)
            self.out.errors.clear()
            for key in [k for k in self.out.counters if k.startswith("errors.")]:
                del self.out.counters[key]
            await self.sleep(0.5)
        await self.gate("measure")
        self.out.measure_begin = time.monotonic()
        derivations = self.cache.derivations
        await self.login_many(numbers, hold=spec.hold, measure=True, resources=resources)
        self.out.measure_end = time.monotonic()
        self.out.extra["pbkdf2_during_storm"] = self.cache.derivations - derivations
        self.out.count("attempts", count)

    # -- idle sessions ------------------------------------------------------------------
    async def _idle(self) -> None:
        spec = self.spec
        await self.gate("before")
        rss_before = self.sampler.rss_kib() if self.sampler else None
        self.out.measure_begin = time.monotonic()
        clients = await self.login_many(list(spec.users), hold=True)
        self.watch_disconnects(clients)
        self.out.extra["login_s"] = time.monotonic() - self.out.measure_begin
        await self.gate("connected")
        await self.sleep(spec.settle_s)
        rss_after = self.sampler.rss_kib() if self.sampler else None
        self.out.extra["rss_before_kib"] = rss_before
        self.out.extra["rss_after_kib"] = rss_after
        self.out.count("connected", sum(1 for c in clients if c.is_ready))
        remaining = spec.duration_s - spec.settle_s
        if remaining > 0:
            await self.sleep(remaining)
        self.out.extra["rss_end_kib"] = self.sampler.rss_kib() if self.sampler else None
        self.out.count("still_connected", sum(1 for c in clients if c.is_ready))
        self.out.measure_end = time.monotonic()
        await self.gate("done")

    # -- chat: closed loop ------------------------------------------------------------------
    def _pairs(self) -> list[tuple[int, int]]:
        users = list(self.spec.users)
        return [(users[i], users[i + 1]) for i in range(0, len(users) - 1, 2)]

    async def _login_pairs(self) -> list[tuple[LoadClient, LoadClient]]:
        pairs = self._pairs()
        flat = [n for pair in pairs for n in pair]
        clients = await self.login_many(flat, hold=True, measure=False)
        by_user = {c.username: c for c in clients}
        ready = []
        for a, b in pairs:
            ca, cb = by_user.get(self.username(a)), by_user.get(self.username(b))
            if ca is not None and cb is not None:
                ready.append((ca, cb))
        self.out.count("pairs", len(ready))
        self.watch_disconnects(clients)
        return ready

    async def _chat(self) -> None:
        spec = self.spec
        pairs = await self._login_pairs()
        freeze_garbage_collection()
        await self.gate("ready")
        out = self.out
        body = "x" * spec.body_size
        state = {"sending": True}
        inflight: dict[LoadClient, dict[int, float]] = {}
        seqs: dict[LoadClient, int] = {}

        def send_next(sender: LoadClient, peer_jid: str) -> None:
            seq = seqs[sender] = seqs[sender] + 1
            inflight[sender][seq] = time.monotonic()
            sender.send((f"<message to={quoteattr(peer_jid)} type='chat' id='c{seq}'><body>{body}</body>"
                         f"<x xmlns='{NS_LOADTEST}' k='q' s='{seq}'/></message>").encode("utf-8"))

        def handler_for(me: LoadClient, peer_jid: str) -> Callable[[Node], None]:
            mine = inflight[me]

            def handle(node: Node) -> None:
                if node.qname != Q_MESSAGE:
                    return
                now = time.monotonic()
                if node.get("type") == "error":
                    out.error("stanza", f"message error to {me.bare}")
                    out.timeline.count(now, "errors")
                    return
                mark = node.child(Q_MARK)
                if mark is None:
                    return
                measuring = self.measuring
                if measuring:
                    out.timeline.count(now, "delivered")
                    out.count("delivered")
                kind = mark.attrs.get("k")
                seq = int(mark.attrs.get("s", "0"))
                if kind == "q":
                    me.send((f"<message to={quoteattr(node.get('from') or '')} type='chat'><body>{body}</body>"
                             f"<x xmlns='{NS_LOADTEST}' k='a' s='{seq}'/></message>").encode("utf-8"))
                    return
                sent = mine.pop(seq, None)
                if sent is None:
                    out.count("duplicates")
                    return
                if measuring:
                    out.latency.add(now - sent)
                    out.timeline.latency(now, now - sent)
                    out.count("round_trips")
                if state["sending"]:
                    send_next(me, peer_jid)

            return handle

        for a, b in pairs:
            for me, peer in ((a, b), (b, a)):
                inflight[me] = {}
                seqs[me] = 0
                me.handler = handler_for(me, peer.jid)
        self._send_missing(pairs)
        for a, b in pairs:
            for _ in range(spec.window):
                send_next(a, b.jid)
                send_next(b, a.jid)
        await self.sleep(spec.warmup_s)
        self.measuring = True
        out.measure_begin = time.monotonic()
        await self.sleep(spec.duration_s)
        out.measure_end = time.monotonic()
        self.measuring = False
        state["sending"] = False
        deadline = time.monotonic() + spec.grace_s
        while time.monotonic() < deadline and any(inflight.values()):
            await self.sleep(0.05)
        out.count("sent", sum(seqs.values()))
        out.count("lost", sum(len(v) for v in inflight.values()) + self.out.extra.get("missing_sent", 0))
        await self.gate("done")

    def _send_missing(self, pairs: list[tuple[LoadClient, LoadClient]]) -> None:
        """Send ``spec.missing`` messages to an account that does not exist (a loss self-check)."""
        if not self.spec.missing or not pairs:
            return
        ghost = f"nobody-{uuid.uuid4().hex[:12]}@{self.spec.settings.domain}"
        sender = pairs[0][0]
        for i in range(self.spec.missing):
            sender.send((f"<message to='{ghost}' type='chat' id='m{i}'><body>lost on purpose</body>"
                         f"<x xmlns='{NS_LOADTEST}' k='m' s='{i}'/></message>").encode("utf-8"))
        self.out.extra["missing_sent"] = self.spec.missing

    # -- soak: fixed rate -------------------------------------------------------------------
    async def _soak(self) -> None:
        spec = self.spec
        pairs = await self._login_pairs()
        freeze_garbage_collection()
        await self.gate("ready")
        out = self.out
        body = "x" * spec.body_size
        senders: list[tuple[LoadClient, bytes, bytes]] = []
        sent_by: dict[str, int] = {}
        seen: dict[str, list[Any]] = {}          # sender jid -> [next expected seq, set ahead]
        drop = [spec.drop_received]

        for a, b in pairs:
            for me, peer in ((a, b), (b, a)):
                prefix = f"<message to={quoteattr(peer.jid)} type='chat'><body>{body}</body><x xmlns='{NS_LOADTEST}' k='s' s='".encode("utf-8")
                senders.append((me, prefix, me.jid.encode("utf-8")))
                sent_by[me.jid] = 0
                me.handler = self._soak_receiver(me, seen, drop)
        if not senders:
            out.error("setup", "no pair logged in")
            return

        self._send_missing(pairs)
        total = [0]
        turn = [0]
        begin = time.monotonic()
        out.measure_begin = begin
        self.measuring = True
        rate = spec.rate

        def tick() -> None:
            now = time.monotonic()
            due = int(rate * (now - begin)) - total[0]
            due = min(due, max(int(rate), 1))              # never burst more than 1 s of backlog
            if due <= 0:
                return
            n = len(senders)
            t = f"{now:.6f}"
            for _ in range(due):
                client, prefix, _jid = senders[turn[0] % n]
                turn[0] += 1
                seq = sent_by[client.jid] = sent_by[client.jid] + 1
                client.send(prefix + f"{seq}' t='{t}'/></message>".encode("ascii"))
            total[0] += due
            out.timeline.count(now, "sent", due)

        pacer = task.LoopingCall(tick)
        pacer.clock = self.reactor
        pacer.start(0.005, now=True)
        try:
            await self.sleep(spec.duration_s)
        finally:
            pacer.stop()
        out.measure_end = time.monotonic()
        deadline = time.monotonic() + spec.grace_s
        expected = sum(sent_by.values())
        while time.monotonic() < deadline and (out.counters.get("received", 0) < expected or (
                spec.echo and out.counters.get("echoes", 0) < out.counters.get("received", 0))):
            await self.sleep(0.05)
        self.measuring = False
        out.count("sent", expected + out.extra.get("missing_sent", 0))
        lost = 0
        for jid, n in sent_by.items():
            state = seen.get(jid)
            got = (state[0] - 1 + len(state[1])) if state else 0
            lost += n - got
        out.count("lost", lost + out.extra.get("missing_sent", 0))
        out.extra["achieved_send_rate"] = round(expected / max(out.measure_end - begin, 1e-9), 1)
        await self.gate("done")

    def _soak_receiver(self, me: LoadClient, seen: dict[str, list[Any]], drop: list[int]) -> Callable[[Node], None]:
        out = self.out
        echo = self.spec.echo

        def handle(node: Node) -> None:
            if node.qname != Q_MESSAGE:
                return
            now = time.monotonic()
            if node.get("type") == "error":
                out.error("stanza", f"message error to {me.bare}")
                out.timeline.count(now, "errors")
                return
            mark = node.child(Q_MARK)
            if mark is None:
                return
            if mark.attrs.get("k") == "e":          # our own message, back from its receiver
                out.count("echoes")
                sent = float(mark.attrs.get("t", now))
                out.latency.add(now - sent)
                out.timeline.latency(now, now - sent)
                return
            if drop[0] > 0:                        # test hook: pretend this one never arrived
                drop[0] -= 1
                return
            sender = node.get("from") or ""
            seq = int(mark.attrs.get("s", "0"))
            if echo:
                me.send((f"<message to={quoteattr(sender)} type='chat'><body/><x xmlns='{NS_LOADTEST}' "
                         f"k='e' s='{seq}' t='{mark.attrs.get('t', '')}'/></message>").encode("utf-8"))
            state = seen.get(sender)
            if state is None:
                state = seen[sender] = [1, set()]
            if seq < state[0] or seq in state[1]:
                out.count("duplicates")
                out.timeline.count(now, "duplicates")
                return
            if seq == state[0]:
                state[0] += 1
                ahead = state[1]
                while state[0] in ahead:
                    ahead.discard(state[0])
                    state[0] += 1
            else:
                if len(state[1]) < _MAX_AHEAD:
                    state[1].add(seq)
                out.count("reordered")
            out.count("received")
            out.timeline.count(now, "delivered")
            if echo:
                return                              # the latency is measured on the way back
            sent = float(mark.attrs.get("t", now))
            out.latency.add(now - sent)
            out.timeline.latency(now, now - sent)

        return handle

    # -- presence fan-out -------------------------------------------------------------------
    async def _presence(self) -> None:
        spec = self.spec
        out = self.out
        users = list(spec.users)
        clients = await self.login_many(users, hold=True, measure=False)
        self.watch_disconnects(clients)
        by_jid = {c.bare: c for c in clients}
        received: dict[str, dict[str, float]] = {}     # round tag -> recipient bare -> time
        sent_at: dict[str, float] = {}

        def handler_for(me: LoadClient) -> Callable[[Node], None]:
            def handle(node: Node) -> None:
                if node.qname != Q_PRESENCE:
                    return
                kind = node.get("type")
                frm = node.get("from") or ""
                bare = frm.split("/", 1)[0]
                if kind == "subscribe":
                    me.send(f"<presence to={quoteattr(bare)} type='subscribed'/>".encode("utf-8"))
                    return
                if kind is not None or bare == me.bare:     # our own broadcast comes back too
                    return
                status = next((c.text for c in node.children if c.name == "status"), "")
                if status.startswith("lt-"):
                    now = time.monotonic()
                    got = received.setdefault(status, {})
                    if me.bare not in got and status in sent_at:
                        got[me.bare] = now
                        out.latency.add(now - sent_at[status])
                        out.timeline.latency(now, now - sent_at[status])
                        out.timeline.count(now, "delivered")
            return handle

        for c in clients:
            c.handler = handler_for(c)
        # Roster set-up: subscribe both ways to every contact not yet at "both".
        contacts_of: dict[str, int] = {}
        requests = 0
        # Every client asks for its roster first: only then is it an "interested resource"
        # that subscription requests are pushed to (RFC 6121 section 3.1.3).
        rosters = await defer.gatherResults([defer.Deferred.fromCoroutine(self._roster(c)) for c in clients])
        for c, roster in zip(clients, rosters):
            contacts_of[c.bare] = sum(1 for j, s in roster.items() if s in ("both", "from") and j in by_jid)
            for other in by_jid:
                if other != c.bare and roster.get(other) not in ("both", "to"):
                    c.send(f"<presence to={quoteattr(other)} type='subscribe'/>".encode("utf-8"))
                    requests += 1
        out.extra["subscription_requests"] = requests
        if requests:
            # Wait (bounded) until every roster holds every other user both ways.
            deadline = time.monotonic() + max(30.0, requests / 50.0)
            while True:
                await self.sleep(0.5)
                rosters = await defer.gatherResults([defer.Deferred.fromCoroutine(self._roster(c))
                                                     for c in clients])
                for c, roster in zip(clients, rosters):
                    contacts_of[c.bare] = sum(1 for j, s in roster.items() if s == "both" and j in by_jid)
                if all(n == len(by_jid) - 1 for n in contacts_of.values()) or time.monotonic() > deadline:
                    break
            # From here on count "from" too: that is who receives our broadcasts.
            for c, roster in zip(clients, rosters):
                contacts_of[c.bare] = sum(1 for j, s in roster.items() if s in ("both", "from") and j in by_jid)
        out.extra["contacts_per_user"] = round(sum(contacts_of.values()) / max(len(contacts_of), 1), 1)
        out.extra["roster_complete"] = all(n == len(by_jid) - 1 for n in contacts_of.values())
        await self.sleep(0.5)
        out.measure_begin = time.monotonic()
        self.measuring = True
        rounds = 0
        expected = 0
        fanout = Histogram()
        end = out.measure_begin + spec.duration_s
        order = list(clients)
        while time.monotonic() < end and order:
            c = order[rounds % len(order)]
            if c.is_ready:
                tag = f"lt-{spec.worker}-{rounds}"
                sent_at[tag] = time.monotonic()
                c.send(f"<presence><status>{tag}</status></presence>".encode("utf-8"))
                expected += contacts_of.get(c.bare, 0)
                out.timeline.count(sent_at[tag], "broadcasts")
            rounds += 1
            await self.sleep(spec.presence_interval_s)
        await self.sleep(min(spec.grace_s, 5.0))
        out.measure_end = time.monotonic()
        self.measuring = False
        got = 0
        for tag, recipients in received.items():
            got += len(recipients)
            if recipients:
                fanout.add(max(recipients.values()) - sent_at[tag])
        out.count("broadcasts", len(sent_at))
        out.count("sent", expected)
        out.count("delivered", got)
        out.count("lost", max(expected - got, 0))
        out.extra["fanout_complete"] = fanout.to_dict()

    async def _roster(self, client: LoadClient) -> dict[str, str]:
        try:
            node = await client.iq("get", f"<query xmlns='{NS_ROSTER}'/>")
        except Exception as e:
            self.out.error("roster", str(e))
            return {}
        query = node.child(f"{NS_ROSTER} query")
        if query is None:
            return {}
        return {item.get("jid", ""): item.get("subscription", "none") for item in query.children}


def freeze_garbage_collection() -> None:
    """Hide the logged-in clients from the cyclic garbage collector before measuring:
    otherwise each full collection walks all of them (tens of ms with thousands of
    clients) and the pause shows up as the server's latency."""
    gc.collect()
    gc.freeze()


def _loadavg() -> float | None:
    """The machine's 1-minute load average (other processes compete for the CPU too)."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def run_worker(reactor: Any, spec: RunSpec, gate: Gate | None = None) -> defer.Deferred:
    """Run ``spec`` in ``reactor``; fires with the worker's result dict."""
    if spec.scenario not in SCENARIOS:
        return defer.fail(ValueError(f"unknown scenario {spec.scenario!r}"))
    worker = Worker(reactor, spec, gate or (lambda name: defer.succeed(None)))
    return defer.Deferred.fromCoroutine(worker.run())
