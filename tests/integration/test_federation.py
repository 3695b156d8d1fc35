"""Two tigasepy servers federating in this process on 127.0.0.1 (RFC 6120 s2s, XEP-0220, XEP-0178).

``a.localhost`` and ``b.localhost`` each run the whole service tree with an s2s listener on
a free loopback port and a static route to the other (no DNS). Users on each side
subscribe to each other, then exchange presence and messages over slixmpp clients.

- ``dialback``: each server has its own generated self-signed certificate; neither trusts
  the other's, so both directions authenticate with Server Dialback over TLS.
- ``external``: one test CA issues both certificates and is each server's s2s trust
  store, so both directions authenticate with SASL EXTERNAL; A connects first and makes
  its stream bidirectional (XEP-0288), so B answers over it.
- ``external-without-bidi``: the same with ``[s2s] bidi = false``: one stream each way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from support.federation import FederatedClientPool, TestCA, federation_overrides, subscribe_presence_and_chat
from support.server import RunningServer, free_port, start_server
from support.xmpp_clients import (
    ClientPool, asyncio_test, fetch_roster, from_deferred, is_presence, online, run_in_reactor,
)

A, B, DOWN = "a.localhost", "b.localhost", "down.localhost"
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-2"}


@dataclass
class Federation:
    """Two started servers and a client pool for each."""

    a: RunningServer
    b: RunningServer
    clients_a: ClientPool
    clients_b: ClientPool
    mode: str

    def incoming_methods(self, server: RunningServer) -> set[str]:
        """How the incoming s2s streams of ``server`` authenticated their peers."""
        federation = server.service.federation.service
        return {method for stream in federation.incoming for method in stream.auth_methods.values()}

    def outgoing_methods(self, server: RunningServer) -> set[str]:
        """How the outgoing s2s streams of ``server`` authenticated."""
        federation = server.service.federation.service
        return {route.stream.auth_method for route in federation.routes.values() if route.stream is not None}


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest.fixture(params=["dialback", "external", "external-without-bidi"])
def federation(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Federation]:
    """a.localhost and b.localhost federating (see the module docstring); alice on A, bob on B."""
    mode = request.param
    port_a, port_b = free_port(), free_port()
    certs: dict[str, Any] = {A: None, B: None}
    ca_file = None
    if mode.startswith("external"):
        ca = TestCA(tmp_path / "ca")
        certs = {A: ca.issue([A]), B: ca.issue([B])}
        ca_file = ca.path
    s2s = {"bidi": mode != "external-without-bidi"}
    # down.localhost: a route to a port where nothing listens.
    overrides_a = federation_overrides(A, port_a, {B: f"127.0.0.1:{port_b}", DOWN: f"127.0.0.1:{free_port()}"},
                                       certificate=certs[A], ca_file=ca_file, s2s=s2s)
    overrides_b = federation_overrides(B, port_b, {A: f"127.0.0.1:{port_a}"}, certificate=certs[B],
                                       ca_file=ca_file, s2s=s2s)
    reactor = _reactor()
    a = run_in_reactor(lambda: start_server((tmp_path / "a").resolve(), reactor, overrides_a))
    b = run_in_reactor(lambda: start_server((tmp_path / "b").resolve(), reactor, overrides_b))
    run_in_reactor(lambda: defer.gatherResults([a.create_account("alice", PASSWORDS["alice"]),
                                                b.create_account("bob", PASSWORDS["bob"])], consumeErrors=True))
    pools = (FederatedClientPool(a, ca_file), FederatedClientPool(b, ca_file))
    try:
        yield Federation(a, b, pools[0], pools[1], mode)
    finally:
        for pool in pools:
            run_in_reactor(pool.close_all)
        run_in_reactor(b.stop)
        run_in_reactor(a.stop)


@asyncio_test
async def test_users_on_two_servers_subscribe_exchange_presence_and_chat(federation: Federation) -> None:
    """alice@a and bob@b subscribe to each other across servers, see each other's presence
    and chat both ways; the servers authenticated each other as the mode says."""
    alice = await online(federation.clients_a, "alice", "home")
    bob = await online(federation.clients_b, "bob", "work")
    await subscribe_presence_and_chat(alice, bob)

    a_out, b_out = federation.outgoing_methods(federation.a), federation.outgoing_methods(federation.b)
    a_in, b_in = federation.incoming_methods(federation.a), federation.incoming_methods(federation.b)
    if federation.mode == "dialback":
        assert (a_out, b_out, a_in, b_in) == ({"dialback"}, {"dialback"}, {"dialback"}, {"dialback"})
    elif federation.mode == "external":
        # A connected first and made its stream bidirectional (XEP-0288): B answers over it.
        assert (a_out, b_in) == ({"sasl-external"}, {"sasl-external"})
        assert (b_out, a_in) == (set(), set())
    else:
        assert (a_out, b_out, a_in, b_in) == ({"sasl-external"},) * 4


@pytest.fixture
def virtual_hosts(tmp_path: Path) -> Iterator[tuple[RunningServer, RunningServer, Path]]:
    """A serves a.localhost ([tls] certificate) and a2.localhost (a certificate of its own,
    [hosts."a2.localhost"]); B serves b.localhost. One CA; dialback off on both sides, so
    every stream must authenticate with certificates; no bidi, so B opens its own stream."""
    reactor = _reactor()
    ca = TestCA(tmp_path / "ca")
    port_a, port_b = free_port(), free_port()
    a2_cert, a2_key = ca.issue(["a2.localhost"])
    certs_only = {"dialback": False, "bidi": False}
    overrides_a = federation_overrides(A, port_a, {B: f"127.0.0.1:{port_b}"}, certificate=ca.issue([A]),
                                       ca_file=ca.path, s2s=certs_only)
    overrides_a["server"]["domains"] = [A, "a2.localhost"]
    overrides_a["hosts"] = {"a2.localhost": {"certificate": str(a2_cert), "private_key": str(a2_key)}}
    overrides_b = federation_overrides(B, port_b, {A: f"127.0.0.1:{port_a}", "a2.localhost": f"127.0.0.1:{port_a}"},
                                       certificate=ca.issue([B]), ca_file=ca.path, s2s=certs_only)
    a = run_in_reactor(lambda: start_server((tmp_path / "a").resolve(), reactor, overrides_a))
    b = run_in_reactor(lambda: start_server((tmp_path / "b").resolve(), reactor, overrides_b))
    try:
        yield a, b, ca.path
    finally:
        run_in_reactor(b.stop)
        run_in_reactor(a.stop)


@asyncio_test
async def test_virtual_host_with_its_own_certificate_federates_with_it(
        virtual_hosts: tuple[RunningServer, RunningServer, Path]) -> None:
    """The [hosts] certificate of a2.localhost is what B sees, in both directions (SNI on
    B's connections to us, our client certificate on ours), so SASL EXTERNAL works for a
    domain the [tls] certificate does not name."""
    from twisted.internet import defer as _defer

    from support.xmpp_clients import TestClient

    a, b, ca_path = virtual_hosts
    await from_deferred(_defer.gatherResults([a.accounts.register("carol@a2.localhost", "carol-secret-3"),
                                              b.create_account("bob", PASSWORDS["bob"])]))
    carol = TestClient("carol@a2.localhost/desk", "carol-secret-3", cafile=ca_path)
    bob = TestClient(f"bob@{B}/work", PASSWORDS["bob"], cafile=ca_path)
    try:
        for client, server in ((carol, a), (bob, b)):
            await client.login(server.c2s_port)
            await fetch_roster(client)
            client.send_presence()
            await client.presences.wait_for(is_presence(None, client.boundjid.full), what="own presence")
        await subscribe_presence_and_chat(carol, bob)
    finally:
        for client in (carol, bob):
            await client.close(timeout=2.0)
    federation_b = b.service.federation.service
    incoming_b = {pair: m for s in federation_b.incoming for pair, m in s.auth_methods.items()}
    assert incoming_b.get(("a2.localhost", B)) == "sasl-external"
    federation_a = a.service.federation.service
    incoming_a = {pair: m for s in federation_a.incoming for pair, m in s.auth_methods.items()}
    assert incoming_a.get((B, "a2.localhost")) == "sasl-external"


@pytest.fixture
def dns_federation(tmp_path: Path) -> Iterator[tuple[RunningServer, RunningServer, Any]]:
    """A finds B through DNS (a DNS server of the test's own on 127.0.0.1 answering an
    ``_xmpp-server._tcp.b.localhost`` SRV record that points at B's s2s port on
    ``localhost``); B has a static route to A. Dialback (self-signed certificates)."""
    from twisted.names import client

    from support.prosody import FakeDNS

    reactor = _reactor()
    dns = FakeDNS()
    dns_port = run_in_reactor(lambda: defer.succeed(dns.listen(reactor)))
    port_a, port_b = free_port(), free_port()
    dns.add_srv(f"_xmpp-server._tcp.{B}", port_b, "localhost")
    overrides_a = federation_overrides(A, port_a, {}, s2s={"use_dns": True})
    overrides_b = federation_overrides(B, port_b, {A: f"127.0.0.1:{port_a}"})
    a = run_in_reactor(lambda: start_server((tmp_path / "a").resolve(), reactor, overrides_a))
    b = run_in_reactor(lambda: start_server((tmp_path / "b").resolve(), reactor, overrides_b))
    a.service.federation.service.resolver.dns_resolver = client.Resolver(
        servers=[("127.0.0.1", dns_port)], reactor=reactor)
    run_in_reactor(lambda: defer.gatherResults([a.create_account("alice", PASSWORDS["alice"]),
                                                b.create_account("bob", PASSWORDS["bob"])], consumeErrors=True))
    pools = (FederatedClientPool(a), FederatedClientPool(b))
    try:
        yield a, b, (pools, dns)
    finally:
        for pool in pools:
            run_in_reactor(pool.close_all)
        run_in_reactor(b.stop)
        run_in_reactor(a.stop)
        run_in_reactor(dns.stop)


@asyncio_test
async def test_a_server_found_through_srv_records(dns_federation: tuple[RunningServer, RunningServer, Any]) -> None:
    """The DNS path (twisted.names): SRV lookups for both services, then the SRV target."""
    a, b, ((pool_a, pool_b), dns) = dns_federation
    alice = await online(pool_a, "alice", "home")
    bob = await online(pool_b, "bob", "work")
    await subscribe_presence_and_chat(alice, bob)
    assert {(f"_xmpp-server._tcp.{B}", "SRV"), (f"_xmpps-server._tcp.{B}", "SRV")} <= set(dns.queries)
    route = next(iter(a.service.federation.service.routes.values()))
    assert (route.stream.target.host, route.stream.target.port) == ("localhost", b.service.listener("s2s").port.getHost().port)


@pytest.mark.parametrize("federation", ["dialback"], indirect=True)
@asyncio_test
async def test_errors_come_back_across_servers_and_unreachable_domains_bounce(federation: Federation) -> None:
    """A message to a missing account on B comes back as B's error over s2s; a message to a
    domain whose server does not answer comes back as remote-server-not-found."""
    from support.xmpp_clients import CLIENT, stanza_text

    alice = await online(federation.clients_a, "alice", "home")
    alice.send_message(mto=f"nobody@{B}", mbody="anyone there?", mtype="chat")
    error = await alice.messages.wait_for(lambda m: m.xml.get("type") == "error", what="B's error")
    assert error.xml.get("from") == f"nobody@{B}"
    assert error["error"]["condition"] == "service-unavailable"

    alice.send_message(mto=f"carol@{DOWN}", mbody="hello?", mtype="chat")
    error = await alice.messages.wait_for(lambda m: m.xml.get("type") == "error", what="the bounce")
    assert error.xml.get("from") == f"carol@{DOWN}"
    assert error["error"]["condition"] == "remote-server-not-found"
    assert stanza_text(error, f"{{{CLIENT}}}body") == "hello?"
