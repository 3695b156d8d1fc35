"""Virtual hosts over real sockets: a host's own certificate (SNI) on both c2s listeners."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.server import RunningServer
from support.xmpp_clients import ClientPool, LoginFailed, TestClient, asyncio_test, from_deferred
from tigasepy import tls

OWN = "own.test"


@pytest.fixture
def own_certificate(tmp_path: Path) -> Path:
    cert, key = tls.generate_self_signed([OWN])
    (tmp_path / "own.pem").write_bytes(cert)
    (tmp_path / "own.key").write_bytes(key)
    return tmp_path / "own.pem"


@pytest.fixture
def server_overrides(own_certificate: Path) -> dict[str, Any]:
    return {"server": {"domains": ["localhost", OWN]},
            "hosts": {OWN: {"certificate": str(own_certificate),
                            "private_key": str(own_certificate.with_suffix(".key"))}}}


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
@asyncio_test
async def test_a_host_with_its_own_certificate_presents_it(xmpp_server: RunningServer, clients: ClientPool,
                                                            own_certificate: Path, direct_tls: bool) -> None:
    await from_deferred(xmpp_server.accounts.register(f"carol@{OWN}", "carol-own-pw"))
    port = xmpp_server.direct_tls_port if direct_tls else xmpp_server.c2s_port
    # Trusting only own.test's certificate: the login works only if the server presented it.
    carol = TestClient(f"carol@{OWN}", "carol-own-pw", cafile=own_certificate)
    clients.clients.append(carol)
    await carol.login(port, direct_tls=direct_tls)
    assert carol.boundjid.bare == f"carol@{OWN}"

    # localhost keeps the server's (generated) certificate, which own.test's does not verify.
    alice = TestClient("alice@localhost", "alice-secret-1", cafile=own_certificate)
    clients.clients.append(alice)
    with pytest.raises((LoginFailed, AssertionError)):
        await alice.login(port, direct_tls=direct_tls, timeout=5)
    await (await clients.login("alice", direct_tls=direct_tls)).ping_server()

