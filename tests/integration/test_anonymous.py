"""SASL ANONYMOUS (XEP-0175) over real sockets with slixmpp: a guest host next to a regular one."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from support.server import RunningServer
from support.xmpp_clients import (
    ClientPool,
    LoginFailed,
    TestClient,
    asyncio_test,
    feature_mechanisms,
    from_deferred,
    is_chat,
    run_in_reactor,
)
from tigasepy.storage.interfaces import IOfflineStore

GUEST = "guest.localhost"

#: localhost keeps its internal accounts; guest.localhost offers ANONYMOUS only.
pytestmark = pytest.mark.parametrize("server_overrides", [{
    "server": {"domains": ["localhost", GUEST]},
    "auth": {"hosts": {GUEST: {"authenticators": [], "anonymous": True}}},
}])


@pytest.fixture
def guests(xmpp_server: RunningServer) -> Iterator[list[TestClient]]:
    made: list[TestClient] = []
    try:
        yield made
    finally:
        async def close() -> None:
            for client in made:
                try:
                    await client.close(timeout=2.0)
                except Exception:  # noqa: BLE001 - teardown goes on
                    client.abort()
        run_in_reactor(close)


async def guest_login(server: RunningServer, guests: list[TestClient]) -> TestClient:
    client = TestClient(GUEST, "", cafile=server.certificate_path)
    guests.append(client)
    await client.login(server.c2s_port)
    return client


@asyncio_test
async def test_anonymous_login_gets_a_random_temporary_account(xmpp_server: RunningServer,
                                                               guests: list[TestClient],
                                                               clients: ClientPool) -> None:
    one = await guest_login(xmpp_server, guests)
    two = await guest_login(xmpp_server, guests)
    assert one.secure
    assert feature_mechanisms(one.stream_features.items[1]) == ["ANONYMOUS"]
    for client in (one, two):
        assert client.boundjid.domain == GUEST
        assert re.fullmatch(r"[0-9a-f]{32}", client.boundjid.user), client.boundjid
    assert one.boundjid.user != two.boundjid.user

    # A registered user can talk to the guest while it is there.
    alice = await clients.login("alice")
    alice.send_message(mto=one.boundjid.full, mbody="hello guest", mtype="chat")
    await one.messages.wait_for(is_chat("hello guest"), what="alice's message")

    # Once it is gone the account no longer exists: nothing is kept for it.
    bare = one.boundjid.bare
    await one.close()
    sm = xmpp_server.service.sm
    assert not await from_deferred(sm.account_exists(bare))
    alice.send_message(mto=bare, mbody="are you there?", mtype="chat")
    await alice.ping_server()
    offline = xmpp_server.service.stores.get(IOfflineStore)
    assert await from_deferred(offline.count(bare)) == 0


@asyncio_test
async def test_regular_host_offers_no_anonymous_login(xmpp_server: RunningServer, clients: ClientPool) -> None:
    alice = await clients.login("alice")
    mechanisms = feature_mechanisms(alice.stream_features.items[1])
    assert "ANONYMOUS" not in mechanisms and "SCRAM-SHA-256" in mechanisms
    anonymous = TestClient("localhost", "", cafile=xmpp_server.certificate_path)
    clients.clients.append(anonymous)
    with pytest.raises(LoginFailed):
        await anonymous.login(xmpp_server.c2s_port)


@asyncio_test
async def test_guest_host_refuses_passwords(xmpp_server: RunningServer, clients: ClientPool) -> None:
    """Even an account that exists in the store cannot log in with its password on the
    guest host (its chain has no password authenticator)."""
    await from_deferred(xmpp_server.accounts.register(f"dora@{GUEST}", "dora-password"))
    dora = TestClient(f"dora@{GUEST}", "dora-password", cafile=xmpp_server.certificate_path,
                      mechanism="PLAIN")
    clients.clients.append(dora)
    with pytest.raises(LoginFailed):
        await dora.login(xmpp_server.c2s_port)
    assert not xmpp_server.service.sm.sessions_of(f"dora@{GUEST}")
