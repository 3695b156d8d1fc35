"""Finding where a remote domain's server is (RFC 6120 3.2, RFC 2782, XEP-0368)."""

from __future__ import annotations

import collections
import random
from typing import Any

import pytest
from twisted.internet import defer
from twisted.names import dns, error as dns_error

from tigasepy.s2s.resolver import NoRoute, Resolver, SrvRecord, Target, order_srv, targets_from_srv


def srv(priority: int, weight: int, port: int, target: str, direct_tls: bool = False) -> SrvRecord:
    return SrvRecord(priority, weight, port, target, direct_tls)


def test_lower_priority_comes_first() -> None:
    records = [srv(20, 1, 1, "c"), srv(10, 1, 1, "a"), srv(30, 1, 1, "d"), srv(10, 1, 1, "b")]
    for seed in range(20):
        ordered = order_srv(records, random.Random(seed))
        assert [r.priority for r in ordered] == [10, 10, 20, 30]
        assert {r.target for r in ordered[:2]} == {"a", "b"}


def test_weights_share_first_place_in_proportion() -> None:
    """RFC 2782: within a priority, a record is picked first with probability weight/total."""
    records = [srv(0, 80, 1, "heavy"), srv(0, 20, 1, "light")]
    rng = random.Random(1234)
    first = collections.Counter(order_srv(records, rng)[0].target for _ in range(4000))
    assert 0.75 < first["heavy"] / 4000 < 0.85


def test_weight_zero_is_rarely_first_when_others_have_weight() -> None:
    records = [srv(0, 0, 1, "zero"), srv(0, 10, 1, "ten")]
    rng = random.Random(5)
    first = collections.Counter(order_srv(records, rng)[0].target for _ in range(2000))
    assert first["zero"] < 300 and first["ten"] > 1700


def test_all_records_are_kept() -> None:
    records = [srv(0, 0, 1, "a"), srv(0, 0, 1, "b"), srv(1, 5, 1, "c")]
    assert sorted(r.target for r in order_srv(records, random.Random(0))) == ["a", "b", "c"]


def test_direct_tls_and_starttls_records_are_one_set() -> None:
    """XEP-0368 3: xmpps- and xmpp- records are ordered together by priority."""
    targets = targets_from_srv([srv(10, 0, 5269, "x.example.")], [srv(5, 0, 5270, "y.example.", True)],
                               random.Random(0))
    assert targets == [Target("y.example", 5270, True), Target("x.example", 5269, False)]


def test_no_records_means_fall_back_to_the_domain() -> None:
    assert targets_from_srv([], []) is None


def test_dot_target_for_xmpp_server_means_no_service() -> None:
    with pytest.raises(NoRoute):
        targets_from_srv([srv(0, 0, 0, ".")], [])


def test_dot_target_for_xmpps_server_only_rules_out_direct_tls() -> None:
    assert targets_from_srv([], [srv(0, 0, 0, ".", True)]) is None
    assert targets_from_srv([srv(0, 0, 5269, "x.example")], [srv(0, 0, 0, ".", True)]) == [
        Target("x.example", 5269)]


class FakeDNS:
    """An IResolver with SRV answers by name; records the names asked."""

    def __init__(self, answers: dict[str, list[tuple[int, int, int, str]]], fail: set[str] = frozenset()) -> None:
        self.answers = answers
        self.fail = fail
        self.asked: list[str] = []

    def lookupService(self, name: str) -> defer.Deferred:
        self.asked.append(name)
        if name in self.fail:
            return defer.fail(dns_error.DNSServerError(name))
        if name not in self.answers:
            return defer.fail(dns_error.DNSNameError(name))
        answers = [dns.RRHeader(name=name, type=dns.SRV, payload=dns.Record_SRV(*values))
                   for values in self.answers[name]]
        return defer.succeed((answers, [], []))


def resolve(resolver: Resolver, domain: str) -> Any:
    results: list[Any] = []
    resolver.resolve(domain).addBoth(results.append)
    [result] = results
    return result


def test_static_route_wins_and_dns_is_not_asked() -> None:
    fake = FakeDNS({"_xmpp-server._tcp.b.example": [(0, 0, 5269, "dns.example")]})
    resolver = Resolver({"B.example": (("127.0.0.1", 15269, False), ("127.0.0.1", 15270, True))},
                        dns_resolver=fake)
    assert resolve(resolver, "b.example") == [Target("127.0.0.1", 15269), Target("127.0.0.1", 15270, True)]
    assert fake.asked == []


def test_dns_off_means_no_route_without_a_static_one() -> None:
    fake = FakeDNS({})
    resolver = Resolver({}, use_dns=False, dns_resolver=fake)
    assert resolve(resolver, "b.example").check(NoRoute)
    assert fake.asked == []


def test_srv_records_of_both_services_are_used() -> None:
    fake = FakeDNS({"_xmpps-server._tcp.b.example": [(0, 0, 5270, "tls.b.example")],
                    "_xmpp-server._tcp.b.example": [(10, 0, 5269, "xmpp.b.example")]})
    resolver = Resolver({}, dns_resolver=fake, rng=random.Random(0))
    assert resolve(resolver, "b.example") == [Target("tls.b.example", 5270, True),
                                              Target("xmpp.b.example", 5269)]
    assert sorted(fake.asked) == ["_xmpp-server._tcp.b.example", "_xmpps-server._tcp.b.example"]


def test_without_srv_records_the_domain_itself_is_tried_on_5269() -> None:
    resolver = Resolver({}, dns_resolver=FakeDNS({}))
    assert resolve(resolver, "b.example") == [Target("b.example", 5269)]


def test_a_failing_srv_lookup_falls_back_like_no_records() -> None:
    fake = FakeDNS({}, fail={"_xmpps-server._tcp.b.example", "_xmpp-server._tcp.b.example"})
    assert resolve(Resolver({}, dns_resolver=fake), "b.example") == [Target("b.example", 5269)]


def test_service_declared_unavailable_has_no_route() -> None:
    fake = FakeDNS({"_xmpp-server._tcp.b.example": [(0, 0, 0, "")]})   # the root name "."
    assert resolve(Resolver({}, dns_resolver=fake), "b.example").check(NoRoute)


def test_the_dns_resolver_is_made_on_first_use_only() -> None:
    made = []

    def factory() -> FakeDNS:
        made.append(1)
        return FakeDNS({})

    resolver = Resolver({"b.example": (("127.0.0.1", 1, False),)}, dns_resolver=factory)
    resolve(resolver, "b.example")
    assert made == []
    resolve(resolver, "c.example")
    resolve(resolver, "d.example")
    assert made == [1]


def test_the_system_resolver_is_built_on_the_given_reactor(tmp_path) -> None:
    """make_dns_resolver reads the name servers from a resolv.conf and sends nothing yet."""
    from twisted.internet.testing import MemoryReactorClock

    from tigasepy.s2s.resolver import make_dns_resolver

    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 192.0.2.53\n")
    reactor = MemoryReactorClock()
    resolver = make_dns_resolver(reactor, str(conf))()
    assert hasattr(resolver, "lookupService")
    dns_client = resolver.resolvers[-1]
    assert dns_client._reactor is reactor and dns_client.dynServers == [("192.0.2.53", 53)]
