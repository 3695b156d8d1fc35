"""The split deployment in one process, over real sockets: a session-manager service and two
connection-manager services with their own data directories, joined by the TLS link on
127.0.0.1, and slixmpp clients. (tests/integration/test_split_processes.py runs the same
shape as separate OS processes.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from support.split import Split, start_split, wait_until
from support.xmpp_clients import ClientPool, asyncio_test, from_deferred, is_chat, run_in_reactor
from tigasepy.router.link_sm import RemoteClientSession

USERS = {"alice": "alice-secret-1", "bob": "bob-secret-2"}


@pytest.fixture
def split(tmp_path: Path) -> Iterator[Split]:
    from twisted.internet import reactor

    deployment = run_in_reactor(lambda: start_split(tmp_path, reactor, cms=2))
    run_in_reactor(lambda: defer.gatherResults([deployment.create_account(u, p) for u, p in USERS.items()],
                                               consumeErrors=True))
    try:
        yield deployment
    finally:
        run_in_reactor(deployment.stop)


@pytest.fixture
def pools(split: Split) -> Iterator[list[ClientPool]]:
    pools = [ClientPool(cm) for cm in split.cms]
    try:
        yield pools
    finally:
        for pool in pools:
            run_in_reactor(pool.close_all)


@asyncio_test
async def test_users_on_different_connection_managers_chat(split: Split, pools: list[ClientPool]) -> None:
    """alice logs in through one process, bob through the other; SASL and bind are checked
    by the session manager; messages cross both ways."""
    alice = await pools[0].login("alice", resource="a")
    bob = await pools[1].login("bob", resource="b")
    [session] = split.sessions_of("alice")
    assert isinstance(session.handle, RemoteClientSession)
    alice.send_message(mto="bob@localhost/b", mbody="hello from cm1", mtype="chat")
    got = await bob.messages.wait_for(is_chat("hello from cm1"))
    assert got.xml.get("from") == "alice@localhost/a"
    bob.send_message(mto="alice@localhost/a", mbody="hello from cm2", mtype="chat")
    await alice.messages.wait_for(is_chat("hello from cm2"))


@asyncio_test
async def test_a_wrong_password_is_refused_by_the_session_manager(split: Split, pools: list[ClientPool]) -> None:
    """The connection manager has no credentials: the SM's verdict is relayed."""
    from support.xmpp_clients import LoginFailed

    client = pools[0].new("alice", password="wrong")
    with pytest.raises(LoginFailed, match="not-authorized"):
        await client.login(split.cms[0].c2s_port)


@asyncio_test
async def test_a_cut_link_loses_nothing(split: Split, pools: list[ClientPool]) -> None:
    """The link's TCP connection breaks: clients stay connected, stanzas queue on both
    sides, the SM reconnects and they arrive once."""
    alice = await pools[0].login("alice", resource="a")
    bob = await pools[1].login("bob", resource="b")
    peer = split.sm.link.peers[split.sm_config.link.connect[1]]
    peer.protocol.transport.abortConnection()       # bob's connection manager loses the link
    await wait_until(lambda: not peer.connected, "link down")
    alice.send_message(mto="bob@localhost/b", mbody="while the link was down", mtype="chat")
    bob.send_message(mto="alice@localhost/a", mbody="bob queued this", mtype="chat")
    await wait_until(lambda: peer.connected, "link back")
    await bob.messages.wait_for(is_chat("while the link was down"))
    await alice.messages.wait_for(is_chat("bob queued this"))
    await bob.ping_server()
    assert not bob.messages.take(is_chat("while the link was down")), "delivered twice"
    assert not alice.stream_errors.items and not bob.stream_errors.items


@asyncio_test
async def test_the_dmz_data_directory_holds_no_account_data(split: Split, pools: list[ClientPool]) -> None:
    """After logins and messages, a connection manager's data directory has its certificate
    and the link secret, and nothing else: no database, no server secret."""
    alice = await pools[0].login("alice", resource="a")
    alice.send_message(mto="bob@localhost", mbody="stored offline in the SM", mtype="chat")
    await alice.ping_server()
    for cm in split.cms:
        names = sorted(p.name for p in cm.config.data_path.iterdir())
        assert names == ["link-secret", "localhost.crt", "localhost.key"], names
        assert cm.service.stores is None and cm.service.sm is None
    assert (split.sm_config.data_path / "tigasepy.sqlite").exists()


@asyncio_test
async def test_reloading_a_connection_manager_keeps_its_clients(split: Split, pools: list[ClientPool]) -> None:
    """A connection manager's new c2s limits and link settings apply on reload; its logged-in
    clients and its link stay."""
    import dataclasses

    alice = await pools[0].login("alice", resource="a")
    cm = split.cms[0].service
    config = cm.config
    report = cm.reload(dataclasses.replace(config, c2s=dataclasses.replace(config.c2s, max_depth=8),
                                           link=dataclasses.replace(config.link, grace_period_s=7)))
    assert report.ok and "[c2s] max_depth" in report.changes and "[link] limits" in report.changes
    assert cm.remote_sm.config.grace_period_s == 7 and cm.remote_sm.connected
    assert all(f.config.max_depth == 8 for f in cm.c2s_factories)
    await alice.ping_server()
    assert not alice.stream_errors.items
