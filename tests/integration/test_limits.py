"""Connection limits over real sockets: sizes, depth, timeouts, unauthenticated streams, bursts.

Each limit is checked from the side of a hostile or broken peer (raw sockets) and
from the side of the other users, who must not notice.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from support.raw_xmpp import CLIENT, RawXmppClient, StreamClosed
from support.server import RunningServer
from support.xmpp_clients import ClientPool, asyncio_test, is_chat, stanza_text

SIZE_LIMIT = 10000
SMALL_LIMIT = {"c2s": {"stanza_size_limit_bytes": SIZE_LIMIT}}


def _outcome(client: RawXmppClient) -> str:
    """How the server reacted: the stream error condition, 'closed', or 'open' (no reaction)."""
    try:
        closed = client.read_until_closed()
    except socket.timeout:
        return "open"
    return closed.error or "closed"


def _huge_stream_header(server: RunningServer, size: int) -> str:
    client = RawXmppClient(server.c2s_port, domain=server.domain, timeout=2.0)
    try:
        client.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                    "to='localhost' version='1.0' junk='")
        try:
            client.sock.sendall(b"A" * size)
        except OSError:
            return "closed"  # the server hung up while we were still sending: limited
        return _outcome(client)
    finally:
        client.close()


@pytest.mark.parametrize("server_overrides", [SMALL_LIMIT])
@asyncio_test
async def test_endless_stream_header_is_cut_off_at_the_size_limit(xmpp_server: RunningServer) -> None:
    """A stream header that never ends (1 MiB attribute, 100x the limit) from an
    unauthenticated, unencrypted peer is cut off with <policy-violation/>, like an
    oversized stanza."""
    outcome = await asyncio.to_thread(_huge_stream_header, xmpp_server, 1 << 20)
    assert outcome in ("policy-violation", "closed")


def _nested(server: RunningServer, password: str, depth: int) -> str:
    client = RawXmppClient(server.c2s_port, domain=server.domain, cafile=server.certificate_path)
    try:
        client.login("alice", password)
        client.send("<message to='bob@localhost/b' type='chat'><body>deep</body>"
                    + "<x xmlns='urn:example:nest'>" * depth + "</x>" * depth + "</message>")
        try:
            client.ping()
            return "open"
        except StreamClosed as closed:
            return closed.error or "closed"
    finally:
        client.close()


@pytest.mark.parametrize("depth,outcome", [(20, "open"), (40, "policy-violation")])
@asyncio_test
async def test_nesting_deeper_than_max_depth_closes_the_stream(
        clients: ClientPool, xmpp_server: RunningServer, accounts: dict[str, str],
        depth: int, outcome: str) -> None:
    """A stanza nested within c2s.max_depth (32) is delivered; a deeper one ends the
    sender's stream with <policy-violation/> and is not delivered."""
    bob = await clients.login("bob", resource="b")
    assert await asyncio.to_thread(_nested, xmpp_server, accounts["alice"], depth) == outcome
    await bob.ping_server()
    delivered = bob.messages.take(is_chat("deep")) is not None
    assert delivered == (outcome == "open")


def _burst(server: RunningServer, password: str, count: int) -> None:
    client = RawXmppClient(server.c2s_port, domain=server.domain, cafile=server.certificate_path)
    try:
        client.login("alice", password)
        client.send("".join(f"<message to='bob@localhost/b' type='chat' id='m{i}'><body>burst {i}</body></message>"
                            for i in range(count)))
        reply = client.ping()
        assert reply.get("type") == "result"
    finally:
        client.close()


@asyncio_test
async def test_pipelined_burst_of_stanzas_arrives_complete_and_in_order(
        clients: ClientPool, xmpp_server: RunningServer, accounts: dict[str, str]) -> None:
    """200 messages written in one go are all delivered, in order."""
    bob = await clients.login("bob", resource="b")
    await asyncio.to_thread(_burst, xmpp_server, accounts["alice"], 200)
    bodies = []
    for _ in range(200):
        message = await bob.messages.wait_for(what="a burst message")
        bodies.append(stanza_text(message, f"{{{CLIENT}}}body"))
    assert bodies == [f"burst {i}" for i in range(200)]


def _silent_connection(server: RunningServer, authenticate: str | None) -> tuple[str, float]:
    import time

    client = RawXmppClient(server.c2s_port, domain=server.domain, cafile=server.certificate_path,
                           timeout=4.0)
    try:
        start = time.monotonic()
        if authenticate is None:
            client.open()
        else:
            client.login("alice", authenticate)
        return _outcome(client), time.monotonic() - start
    finally:
        client.close()


@pytest.mark.parametrize("server_overrides", [{"c2s": {"auth_timeout_s": 1}}])
@asyncio_test
async def test_unauthenticated_connection_is_closed_after_auth_timeout(xmpp_server: RunningServer) -> None:
    """A peer that opens a stream and never authenticates is closed with
    <connection-timeout/> after c2s.auth_timeout_s."""
    outcome, elapsed = await asyncio.to_thread(_silent_connection, xmpp_server, None)
    assert outcome == "connection-timeout"
    assert 0.8 <= elapsed < 3.5


@pytest.mark.parametrize("server_overrides", [{"c2s": {"idle_timeout_s": 1, "auth_timeout_s": 1}}])
@asyncio_test
async def test_idle_session_is_closed_after_idle_timeout(
        clients: ClientPool, xmpp_server: RunningServer, accounts: dict[str, str]) -> None:
    """A bound session that sends nothing for c2s.idle_timeout_s is closed with
    <connection-timeout/>; the auth timer no longer applies once bound."""
    outcome, elapsed = await asyncio.to_thread(_silent_connection, xmpp_server, accounts["alice"])
    assert outcome == "connection-timeout"
    assert elapsed < 3.5
    assert xmpp_server.sessions_of("alice") == []


def _open_unauthenticated(server: RunningServer, count: int) -> list[str]:
    clients = [RawXmppClient(server.c2s_port, domain=server.domain, timeout=2.0) for _ in range(count)]
    outcomes = []
    try:
        for client in clients:
            try:
                client.open()
                outcomes.append("features")
            except StreamClosed as closed:
                outcomes.append(closed.error or "closed")
        return outcomes
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize("server_overrides", [{"c2s": {"max_unauthenticated": 2}}])
@asyncio_test
async def test_unauthenticated_streams_beyond_the_limit_are_refused(clients: ClientPool,
                                                                    xmpp_server: RunningServer) -> None:
    """With c2s.max_unauthenticated = 2, a third simultaneous unauthenticated stream gets
    <resource-constraint/>; bound sessions do not count, and slots free up on close."""
    alice = await clients.login("alice", resource="a")  # bound: not counted
    assert await asyncio.to_thread(_open_unauthenticated, xmpp_server, 3) == \
        ["features", "features", "resource-constraint"]
    # all three were closed: a new one gets through, and so does a login
    assert await asyncio.to_thread(_open_unauthenticated, xmpp_server, 1) == ["features"]
    bob = await clients.login("bob", resource="b")
    alice.send_message(mto=bob.boundjid.full, mbody="hi", mtype="chat")
    await bob.messages.wait_for(is_chat("hi"), what="alice's message")


@asyncio_test
async def test_many_clients_log_in_concurrently_and_chat(xmpp_server: RunningServer) -> None:
    """20 accounts log in at the same time and each gets exactly the message addressed to it."""
    from support.xmpp_clients import ClientPool as Pool

    count = 20
    await asyncio.gather(*(_create(xmpp_server, f"user{i}") for i in range(count)))
    pool = Pool(xmpp_server)
    try:
        # slixmpp's SCRAM is pure-Python PBKDF2 on the shared loop: allow for a loaded machine
        users = await asyncio.gather(*(pool.login(f"user{i}", resource="r", timeout=30) for i in range(count)))
        for i, sender in enumerate(users):
            receiver = users[(i + 1) % count]
            sender.send_message(mto=receiver.boundjid.full, mbody=f"from {i}", mtype="chat")
        for i, receiver in enumerate(users):
            got = await receiver.messages.wait_for(what="the ring message")
            assert stanza_text(got, f"{{{CLIENT}}}body") == f"from {(i - 1) % count}"
        assert len(list(xmpp_server.service.sm.all_sessions())) == count
    finally:
        await pool.close_all()


async def _create(server: RunningServer, user: str) -> Any:
    from support.xmpp_clients import from_deferred

    return await from_deferred(server.create_account(user, f"{user}-password"))
