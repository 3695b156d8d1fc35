"""Where to connect for a remote domain (RFC 6120 3.2, XEP-0368, RFC 2782).

Order of sources:

1. ``[s2s.routes]``: a static list of targets for the domain, tried in the order given
   (private federations, tests). No DNS query is made for such a domain.
2. DNS SRV through ``twisted.names``: ``_xmpps-server._tcp`` (direct TLS) and
   ``_xmpp-server._tcp`` (STARTTLS) records, merged into one set and ordered by priority,
   then weighted-randomly within a priority (RFC 2782, XEP-0368 section 3). A record whose
   target is ``.`` means the service is not offered: an ``_xmpp-server`` one stops the
   lookup (no A/AAAA fallback), an ``_xmpps-server`` one only rules out direct TLS.
3. No SRV records: the domain itself on port 5269 (its A/AAAA records, which the
   connection endpoint looks up).

With ``use_dns = false`` only static routes exist; other domains have no route.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from twisted.internet import defer
from twisted.names import dns, error as dns_error

from tigasepy.log_level import Logger

DEFAULT_PORT = 5269


@dataclass(frozen=True)
class Target:
    """One place to try: ``host`` (a name or an address), ``port``, and whether TLS starts
    at once (XEP-0368) instead of with STARTTLS."""

    host: str
    port: int
    direct_tls: bool = False

    def __str__(self) -> str:
        scheme = "tls://" if self.direct_tls else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}{host}:{self.port}"


@dataclass(frozen=True)
class SrvRecord:
    """The parts of an SRV record that ordering needs (``direct_tls``: an ``_xmpps-`` one)."""

    priority: int
    weight: int
    port: int
    target: str
    direct_tls: bool = False


class NoRoute(Exception):
    """The domain has no usable target: no static route, no SRV service, DNS disabled."""


def order_srv(records: Iterable[SrvRecord], rng: random.Random | None = None) -> list[SrvRecord]:
    """``records`` in the order to try them (RFC 2782 "Usage rules").

    Lower priorities first. Within one priority, records are picked one at a time with a
    probability proportional to their weight; records of weight 0 come first in the
    running list, so they are picked only rarely when others have weight (RFC 2782).
    """
    rng = rng or random.Random()
    by_priority: dict[int, list[SrvRecord]] = {}
    for record in records:
        by_priority.setdefault(record.priority, []).append(record)
    ordered: list[SrvRecord] = []
    for priority in sorted(by_priority):
        remaining = sorted(by_priority[priority], key=lambda r: r.weight != 0)
        while remaining:
            total = sum(r.weight for r in remaining)
            pick = rng.randint(0, total)
            running = 0
            for index, record in enumerate(remaining):
                running += record.weight
                if running >= pick:
                    ordered.append(remaining.pop(index))
                    break
    return ordered


def targets_from_srv(xmpp: Sequence[SrvRecord], xmpps: Sequence[SrvRecord],
                     rng: random.Random | None = None) -> list[Target] | None:
    """The targets the SRV answers give, or None when they say nothing (fall back to A/AAAA).

    Raises:
        NoRoute: the ``_xmpp-server`` answer is the single record ``.`` (no service) and
            there is no direct TLS record either.
    """
    usable = [r for r in xmpps if r.target not in ("", ".")]
    xmpp_usable = [r for r in xmpp if r.target not in ("", ".")]
    no_service = bool(xmpp) and not xmpp_usable
    usable.extend(xmpp_usable)
    if not usable:
        if no_service:
            raise NoRoute("the domain's _xmpp-server SRV record says it offers no federation")
        return None
    return [Target(r.target.rstrip("."), r.port, r.direct_tls) for r in order_srv(usable, rng)]


class Resolver:
    """Finds the targets of a remote domain.

    Args:
        static_routes: domain -> ``((host, port, direct_tls), ...)``, consulted first.
        use_dns: whether domains without a static route are looked up in DNS.
        dns_resolver: a ``twisted.names`` resolver (``IResolver``); or a zero-argument
            callable making one on first use, so that a server that never federates
            through DNS never reads ``/etc/resolv.conf``.
        rng: randomness for SRV weights (tests pass a seeded one).

    ``dns_resolver`` stays an attribute: an embedder (or a test) may point it at other
    name servers.
    """

    _log = Logger()

    def __init__(self, static_routes: Mapping[str, Sequence[tuple[str, int, bool]]], use_dns: bool = True,
                 dns_resolver: Any = None, rng: random.Random | None = None) -> None:
        self._static = {domain.lower(): tuple(Target(h, p, t) for h, p, t in targets)
                        for domain, targets in static_routes.items()}
        self.use_dns = use_dns
        self.dns_resolver = dns_resolver
        self._rng = rng or random.Random()

    def _resolver(self) -> Any:
        if callable(self.dns_resolver) and not hasattr(self.dns_resolver, "lookupService"):
            self.dns_resolver = self.dns_resolver()
        return self.dns_resolver

    def resolve(self, domain: str) -> defer.Deferred:
        """Fires with a non-empty list of ``Target``s; fails with ``NoRoute``."""
        domain = domain.lower()
        static = self._static.get(domain)
        if static is not None:
            return defer.succeed(list(static))
        if not self.use_dns or self.dns_resolver is None:
            return defer.fail(NoRoute(f"no static route to {domain} and DNS is off"))
        return defer.ensureDeferred(self._resolve_dns(domain))

    async def _resolve_dns(self, domain: str) -> list[Target]:
        resolver = self._resolver()
        xmpps_d = self._srv(resolver, f"_xmpps-server._tcp.{domain}", direct_tls=True)
        xmpp_d = self._srv(resolver, f"_xmpp-server._tcp.{domain}", direct_tls=False)
        xmpps = await xmpps_d
        xmpp = await xmpp_d
        targets = targets_from_srv(xmpp, xmpps, self._rng)
        if targets is None:
            return [Target(domain, DEFAULT_PORT)]
        return targets

    def _srv(self, resolver: Any, name: str, direct_tls: bool) -> defer.Deferred:
        d = resolver.lookupService(name)
        d.addCallback(_srv_records, direct_tls)
        d.addErrback(self._srv_failed, name)
        return d

    def _srv_failed(self, failure: Any, name: str) -> list[SrvRecord]:
        if not failure.check(dns_error.DomainError, dns_error.AuthoritativeDomainError):
            self._log.info("SRV lookup of {name} failed: {error}", name=name,
                           error=failure.getErrorMessage())
        return []


def _srv_records(result: Any, direct_tls: bool) -> list[SrvRecord]:
    answers = result[0] if isinstance(result, tuple) else result
    records = []
    for answer in answers:
        if answer.type != dns.SRV:
            continue
        payload = answer.payload
        records.append(SrvRecord(payload.priority, payload.weight, payload.port, str(payload.target),
                                 direct_tls))
    return records


def make_dns_resolver(reactor: Any, resolv_conf: str = "/etc/resolv.conf") -> Callable[[], Any]:
    """A factory for the system's DNS resolver (the servers of ``resolv_conf``, with a cache)
    on ``reactor`` (``twisted.names.client.createResolver`` would take the global one)."""

    def make() -> Any:
        from twisted.names import cache, client, resolve

        return resolve.ResolverChain([cache.CacheResolver(reactor=reactor),
                                      client.Resolver(resolv=resolv_conf, reactor=reactor)])

    return make
