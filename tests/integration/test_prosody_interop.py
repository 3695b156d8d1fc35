"""Federation with a real Prosody (Debian's package): tigasepy serves a.example, Prosody b.example.

The fixture starts its own Prosody (``tests/support/prosody.py``: own config, data
directory and free loopback ports, no system service) and a tigasepy server. tigasepy
reaches Prosody through a static route; Prosody resolves a.example through a DNS server
of the test's own (SRV ``_xmpp-server._tcp.a.example`` -> tigasepy's s2s port), so nothing
leaves 127.0.0.1. alice@a.example and bob@b.example (slixmpp clients) subscribe to each
other, then exchange presence and messages.

- ``dialback``: each server has a self-signed certificate the other does not trust: TLS
  + Server Dialback both ways.
- ``external``: a test CA issues both certificates and is both trust stores, and Prosody
  runs with ``s2s_secure_auth = true``: TLS + SASL EXTERNAL both ways.
- ``bidi``: as ``dialback``, with Prosody's mod_s2s_bidi loaded (XEP-0288).
- ``direct-tls``: as ``external``, but over XEP-0368 direct TLS both ways: Prosody finds
  tigasepy through an ``_xmpps-server`` record, and tigasepy's static route to Prosody is
  ``tls://``.

Without prosody and lua-unbound the tests skip locally and fail under CI (``.ci/run``
installs both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from support.federation import FederatedClientPool, TestCA, federation_overrides, subscribe_presence_and_chat
from support.prosody import FakeDNS, ProsodyServer, prosody_missing
from support.server import RunningServer, free_port, start_server
from support.xmpp_clients import TestClient, asyncio_test, fetch_roster, is_presence, online, run_in_reactor
from tigasepy.tls import generate_self_signed

A, B = "a.example", "b.example"
ALICE, BOB = ("alice", "alice-secret-1"), ("bob", "bob-secret-2")


@dataclass
class Interop:
    """tigasepy (A) and Prosody (B) federating."""

    tigasepy: RunningServer
    prosody: ProsodyServer
    dns: FakeDNS
    clients_a: FederatedClientPool
    bob_cafile: Path
    mode: str
    bob_clients: list[TestClient]

    def new_bob(self) -> TestClient:
        """A slixmpp client for bob@b.example on Prosody's c2s port."""
        client = TestClient(f"bob@{B}/work", BOB[1], cafile=self.bob_cafile)
        self.bob_clients.append(client)
        return client

    def methods(self) -> tuple[set[str], set[str]]:
        """How tigasepy's outgoing and incoming s2s streams authenticated."""
        federation = self.tigasepy.service.federation.service
        outgoing = {r.stream.auth_method for r in federation.routes.values() if r.stream is not None}
        incoming = {m for s in federation.incoming for m in s.auth_methods.values()}
        return outgoing, incoming


def _self_signed(directory: Path, domain: str) -> tuple[Path, Path]:
    cert_pem, key_pem = generate_self_signed([domain])
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{domain}.crt", directory / f"{domain}.key"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    key.chmod(0o600)
    return cert, key


@pytest.fixture(params=["dialback", "external", "bidi", "direct-tls"])
def interop(request: pytest.FixtureRequest, tmp_path: Path,
            missing_service: Callable[[str], Any]) -> Iterator[Interop]:
    """Prosody for b.example and tigasepy for a.example federating (module docstring)."""
    missing = prosody_missing()
    if missing is not None:
        missing_service(missing)
    from twisted.internet import reactor

    mode = request.param
    secure = mode in ("external", "direct-tls")
    dns = FakeDNS()
    dns_port = run_in_reactor(lambda: defer.succeed(dns.listen(reactor)))
    ca_file = None
    if secure:
        ca = TestCA(tmp_path / "ca")
        cert_a, cert_b = ca.issue([A]), ca.issue([B])
        ca_file = ca.path
    else:
        cert_a, cert_b = None, _self_signed(tmp_path / "certs", B)
    prosody = ProsodyServer(tmp_path / "prosody", B, cert_b[0], cert_b[1], dns_port, ca_file=ca_file,
                            secure_auth=secure, bidi=mode == "bidi", direct_tls=mode == "direct-tls")
    prosody.register(*BOB)
    s2s_port, s2s_tls_port = free_port(), free_port()
    if mode == "direct-tls":
        dns.add_srv(f"_xmpps-server._tcp.{A}", s2s_tls_port, A)
    else:
        dns.add_srv(f"_xmpp-server._tcp.{A}", s2s_port, A)
    dns.add_a(A)
    route = (f"tls://127.0.0.1:{prosody.s2s_tls_port}" if mode == "direct-tls"
             else f"127.0.0.1:{prosody.s2s_port}")
    overrides = federation_overrides(A, s2s_port, {B: route}, certificate=cert_a,
                                     ca_file=ca_file, s2s={"direct_tls_port": s2s_tls_port})
    prosody.start()
    tigasepy = None
    interop = None
    try:
        tigasepy = run_in_reactor(lambda: start_server((tmp_path / "a").resolve(), reactor, overrides))
        run_in_reactor(lambda: tigasepy.create_account(*ALICE))
        interop = Interop(tigasepy, prosody, dns, FederatedClientPool(tigasepy, ca_file), ca_file or cert_b[0],
                          mode, [])
        yield interop
    except BaseException:
        print(prosody.tail())
        raise
    finally:
        if interop is not None:
            run_in_reactor(interop.clients_a.close_all)
            for client in interop.bob_clients:
                run_in_reactor(lambda c=client: _close(c))
        if tigasepy is not None:
            run_in_reactor(tigasepy.stop)
        prosody.stop()
        run_in_reactor(dns.stop)


async def _close(client: TestClient) -> None:
    try:
        client.cancel_connection_attempt()
        await client.close(timeout=2.0)
    except Exception:  # noqa: BLE001 - teardown goes on
        client.abort()


@asyncio_test
async def test_tigasepy_and_prosody_users_subscribe_exchange_presence_and_chat(interop: Interop) -> None:
    """alice@a.example (tigasepy) and bob@b.example (Prosody) subscribe to each other, see each
    other's presence and chat; tigasepy authenticated Prosody, and Prosody tigasepy, as the
    mode says."""
    alice = await online(interop.clients_a, "alice", "home")
    bob = interop.new_bob()
    await bob.login(interop.prosody.c2s_port)
    await fetch_roster(bob)
    bob.send_presence()
    await bob.presences.wait_for(is_presence(None, bob.boundjid.full), what="bob's own presence")

    try:
        await subscribe_presence_and_chat(alice, bob)
    except AssertionError:
        print(interop.prosody.tail(200))
        raise

    assert interop.dns.queries and all(name.endswith(".example") for name, _type in interop.dns.queries)
    outgoing, incoming = interop.methods()
    expected = {"dialback": "dialback", "bidi": "dialback"}.get(interop.mode, "sasl-external")
    assert outgoing == {expected}, interop.prosody.tail()
    if interop.mode == "bidi":
        assert incoming <= {expected}   # Prosody may answer over our bidirectional stream
    else:
        assert incoming == {expected}, interop.prosody.tail()
    if interop.mode == "direct-tls":
        federation = interop.tigasepy.service.federation.service
        assert any(s.direct_tls for s in federation.incoming), "Prosody did not use the direct TLS port"
        assert all(r.stream.direct_tls for r in federation.routes.values()), "we did not use direct TLS"
