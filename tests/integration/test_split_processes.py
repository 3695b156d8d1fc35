"""The split deployment as separate OS processes on 127.0.0.1: one session-manager process
(``roles = ["sm"]``, SQLite, the accounts) and two connection-manager processes
(``roles = ["c2s"]``), each ``twistd -n tigasepy``, with slixmpp clients.

The link to the first connection manager runs through a TCP proxy in the test process,
so that it can be cut without killing anyone. The processes live for the whole module;
the tests run in order (chat, the DMZ's data directory, a cut link, a SIGHUP reload, a
killed and restarted connection manager).
"""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, endpoints

from support.processes import LinkProxy, ServerProcess
from support.server import LOOPBACK, TEST_SCRAM_ITERATIONS, free_port
from support.split import write_secret
from support.xmpp_clients import DEFAULT_TIMEOUT, ClientPool, TestClient, asyncio_test, is_chat, run_in_reactor

USERS = {"alice": "alice-secret-1", "bob": "bob-secret-2"}
FAST_LINK = {"grace_period_s": 20, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "request_timeout_s": 10,
             "keepalive_s": 5}
NEW_LINK_SESSION = "new link session"
SLOW = 60.0    # one whole test: processes start, are killed and restarted


@dataclass
class CMEndpoint:
    """A connection-manager process as a ``ClientPool`` sees a server."""

    process: ServerProcess
    c2s_port: int
    direct_tls_port: int
    passwords: dict[str, str]
    domain: str = "localhost"

    @property
    def certificate_path(self) -> Path:
        return self.process.data_dir / f"{self.domain}.crt"

    def jid(self, user: str) -> str:
        return f"{user}@{self.domain}"


@dataclass
class Deployment:
    sm: ServerProcess
    cms: list[CMEndpoint]
    proxy: LinkProxy
    pools: list[ClientPool] = field(default_factory=list)


def _config(data: Path, roles: list[str], link: dict[str, Any], c2s_ports: tuple[int, int] = (0, 0),
            extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "server": {"domains": ["localhost"], "data_dir": str(data), "roles": roles},
        "c2s": {"interface": LOOPBACK, "port": c2s_ports[0], "direct_tls_port": c2s_ports[1]},
        "auth": {"scram_iterations": TEST_SCRAM_ITERATIONS},
        "link": dict(FAST_LINK, **link),
        "extensions": extensions or {},
    }


def _create_accounts(sm_data: Path, sm_config_path: Path) -> None:
    """Create the accounts in the SM's SQLite database before it starts (as `tigasepy user add`)."""
    from twisted.internet import reactor

    from tigasepy.auth.accounts import AccountManager
    from tigasepy.config import load_config
    from tigasepy.storage.factory import open_stores
    from tigasepy.storage.interfaces import IAccountStore

    config = load_config(sm_config_path)

    @defer.inlineCallbacks
    def create() -> Any:
        stores = open_stores(config, reactor)
        yield defer.maybeDeferred(stores.start)
        accounts = AccountManager(stores.get(IAccountStore), config.auth.scram_hashes,
                                  config.auth.scram_iterations, domains=config.server.domains)
        for user, password in USERS.items():
            yield accounts.register(f"{user}@localhost", password)
        yield defer.maybeDeferred(stores.close)

    run_in_reactor(create)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    from twisted.internet import reactor

    root = tmp_path_factory.mktemp("split-processes")
    secret = secrets.token_urlsafe(32)
    passwords = {f"{u}@localhost": p for u, p in USERS.items()}
    cms = []
    link_ports = []
    for index in (1, 2):
        data = root / f"cm{index}" / "data"
        write_secret(data, secret)
        link_port, c2s, tls_port = free_port(), free_port(), free_port()
        link_ports.append(link_port)
        process = ServerProcess(f"cm{index}", root / f"cm{index}",
                                _config(data, ["c2s"], {"listen": f"{LOOPBACK}:{link_port}"}, (c2s, tls_port)))
        cms.append(CMEndpoint(process, c2s, tls_port, passwords))
    proxy = LinkProxy(LOOPBACK, link_ports[0])
    proxy_port = run_in_reactor(lambda: endpoints.TCP4ServerEndpoint(reactor, 0, interface=LOOPBACK).listen(proxy))
    sm_data = root / "sm" / "data"
    write_secret(sm_data, secret)
    connect = [f"{LOOPBACK}:{proxy_port.getHost().port}", f"{LOOPBACK}:{link_ports[1]}"]
    sm = ServerProcess("sm", root / "sm", _config(sm_data, ["sm"], {"connect": connect}))
    _create_accounts(sm_data, sm.config_path)
    for cm in cms:
        cm.process.start()
    sm.start()
    found = Deployment(sm, cms, proxy)
    try:
        run_in_reactor(lambda: asyncio.gather(*(cm.process.wait_log(NEW_LINK_SESSION) for cm in cms)))
        yield found
    finally:
        for pool in found.pools:
            run_in_reactor(pool.close_all)
        sm.stop()
        for cm in cms:
            cm.process.stop()
        run_in_reactor(proxy_port.stopListening)


def pool(deployment: Deployment, index: int) -> ClientPool:
    """A client pool for connection manager ``index`` (closed at module end)."""
    made = ClientPool(deployment.cms[index])   # type: ignore[arg-type]
    deployment.pools.append(made)
    return made


async def disco_features(client: TestClient) -> set[str]:
    info = await client.plugin["xep_0030"].get_info(jid="localhost", timeout=DEFAULT_TIMEOUT)
    return set(info["disco_info"]["features"])


@asyncio_test(timeout=SLOW)
async def test_users_on_different_processes_chat(deployment: Deployment) -> None:
    """alice through cm1, bob through cm2; credentials checked in the SM process."""
    alice = await pool(deployment, 0).login("alice", resource="a")
    bob = await pool(deployment, 1).login("bob", resource="b")
    alice.send_message(mto="bob@localhost/b", mbody="across processes", mtype="chat")
    got = await bob.messages.wait_for(is_chat("across processes"))
    assert got.xml.get("from") == "alice@localhost/a"
    bob.send_message(mto="alice@localhost/a", mbody="and back", mtype="chat")
    await alice.messages.wait_for(is_chat("and back"))
    await alice.close()
    await bob.close()


@asyncio_test(timeout=SLOW)
async def test_the_dmz_data_directories_hold_no_account_data(deployment: Deployment) -> None:
    """The connection managers' data directories: their certificate and the link secret only."""
    for cm in deployment.cms:
        names = sorted(p.name for p in cm.process.data_dir.iterdir())
        assert names == ["link-secret", "localhost.crt", "localhost.key"], names
        assert not list(cm.process.folder.rglob("*.sqlite*"))
    assert (deployment.sm.data_dir / "tigasepy.sqlite").exists()
    assert (deployment.sm.data_dir / "server-secret").exists()


@asyncio_test(timeout=SLOW)
async def test_a_cut_link_loses_no_message(deployment: Deployment) -> None:
    """The link to cm1 breaks: alice stays connected; what she sends and what is sent to her
    meanwhile arrives once the SM has reconnected, exactly once."""
    alice = await pool(deployment, 0).login("alice", resource="cut-a")
    bob = await pool(deployment, 1).login("bob", resource="cut-b")
    cm1 = deployment.cms[0].process
    before = cm1.log().count("session resumed")
    assert deployment.proxy.cut() >= 1
    alice.send_message(mto="bob@localhost/cut-b", mbody="sent during the cut", mtype="chat")
    bob.send_message(mto="alice@localhost/cut-a", mbody="to alice during the cut", mtype="chat")
    await cm1.wait_log("session resumed", count=before + 1)
    await bob.messages.wait_for(is_chat("sent during the cut"))
    await alice.messages.wait_for(is_chat("to alice during the cut"))
    await alice.ping_server()
    await bob.ping_server()
    assert not bob.messages.take(is_chat("sent during the cut")), "delivered twice"
    assert not alice.stream_errors.items
    await alice.close()
    await bob.close()


@asyncio_test(timeout=SLOW)
async def test_sighup_disables_an_extension_without_dropping_sessions(deployment: Deployment) -> None:
    """The SM's config turns XEP-0092 off; after SIGHUP disco no longer lists it, and the
    session that asked before is still connected."""
    alice = await pool(deployment, 0).login("alice", resource="hup")
    assert "jabber:iq:version" in await disco_features(alice)
    sm = deployment.sm
    config = dict(sm.config)
    config["extensions"] = {"version": {"enabled": False}}
    sm.write_config(config)
    reloads = sm.log().count("configuration reloaded")
    sm.signal(signal.SIGHUP)
    await sm.wait_log("configuration reloaded", count=reloads + 1)
    assert "jabber:iq:version" not in await disco_features(alice)
    assert alice.session_started and not alice.stream_errors.items
    await alice.close()


@asyncio_test(timeout=SLOW)
async def test_a_killed_connection_manager_loses_no_acknowledged_message(deployment: Deployment) -> None:
    """cm2 is killed (SIGKILL) while bob has a message he never acknowledged, and alice sends
    another while it is down; cm2 restarts, bob logs in again: both come from offline storage."""
    alice = await pool(deployment, 0).login("alice", resource="k-a")
    bob = pool(deployment, 1).new("bob", resource="k-b")
    bob.register_plugin("xep_0198")
    bob.plugin["xep_0198"].window = 1000       # bob never volunteers an ack
    await bob.login(deployment.cms[1].c2s_port)
    bob.send_presence()
    await bob.ping_server()
    alice.send_message(mto="bob@localhost/k-b", mbody="unacknowledged by bob", mtype="chat")
    await bob.messages.wait_for(is_chat("unacknowledged by bob"))

    cm2 = deployment.cms[1].process
    cm2.kill()
    alice.send_message(mto="bob@localhost", mbody="sent while cm2 was dead", mtype="chat")
    await alice.ping_server()                 # the SM has it (alice's stanza was handled)
    cm2.start()
    await cm2.wait_log(NEW_LINK_SESSION)
    bob.abort()

    again = await pool(deployment, 1).login("bob", resource="k-b2")
    again.send_presence()
    await again.messages.wait_for(is_chat("unacknowledged by bob"), timeout=15)
    await again.messages.wait_for(is_chat("sent while cm2 was dead"), timeout=15)
    await again.close()
    await alice.close()
