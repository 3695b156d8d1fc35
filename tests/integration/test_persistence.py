"""State that must outlive the process: a server restarted on the same data directory."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from support.server import RunningServer, extension_available, start_server
from support.xmpp_clients import (
    DELAY, ClientPool, asyncio_test, befriend, fetch_roster, from_deferred, is_chat, is_presence, online,
)

async def offline_count_reaches(server: RunningServer, owner: str, count: int, timeout: float = 5.0) -> None:
    """Wait (bounded) until ``owner`` has ``count`` stored offline messages."""
    from tigasepy.storage.interfaces import IOfflineStore

    store = server.service.stores.get(IOfflineStore)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (stored := await from_deferred(store.count(owner))) < count:
        assert loop.time() < deadline, f"{owner} has {stored} offline messages, expected {count}"
        await asyncio.sleep(0.02)


pytestmark = pytest.mark.skipif(
    not (extension_available("roster") and extension_available("presence")),
    reason="the roster and presence extensions have not landed yet")


@asyncio_test
async def test_accounts_rosters_and_offline_messages_survive_a_restart(
        xmpp_server: RunningServer, accounts: dict[str, str]) -> None:
    """Subscriptions and a stored offline message are there after the server is stopped
    and a new one is started on the same data directory (SQLite, same certificate)."""
    from twisted.internet import reactor

    first = ClientPool(xmpp_server)
    try:
        alice = await online(first, "alice", "home")
        bob = await online(first, "bob", "work")
        await befriend(alice, bob)
        await bob.close()
        await alice.presences.wait_for(is_presence("unavailable", "bob@localhost"), what="bob left")
        alice.send_message(mto="bob@localhost", mbody="kept across a restart", mtype="chat")
        await alice.ping_server()
        # storing is asynchronous: wait until it is done (shutdown does not wait for it,
        # see test_graceful_shutdown_keeps_offline_messages_still_being_stored)
        await offline_count_reaches(xmpp_server, "bob@localhost", 1)
    finally:
        await first.close_all()
    await from_deferred(xmpp_server.stop())

    restarted = await from_deferred(start_server(xmpp_server.config.data_path, reactor))
    restarted.passwords.update(xmpp_server.passwords)
    second = ClientPool(restarted)
    try:
        bob = await second.login("bob", resource="back", mechanism="SCRAM-SHA-256")
        roster = await fetch_roster(bob)
        assert roster["alice@localhost"]["subscription"] == "both"
        bob.send_presence()
        got = await bob.messages.wait_for(is_chat("kept across a restart"), what="the offline message")
        delay = got.xml.find(f"{{{DELAY}}}delay")
        assert delay is not None
        stamp = datetime.strptime(delay.get("stamp"), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert (datetime.now(timezone.utc) - stamp).total_seconds() < 30

        alice = await second.login("alice", resource="home", mechanism="SCRAM-SHA-1")
        alice.send_presence()
        await alice.presences.wait_for(is_presence(None, "bob@localhost"), what="bob's presence (probe)")
        await bob.presences.wait_for(is_presence(None, "alice@localhost"), what="alice's presence")
    finally:
        await second.close_all()
        await from_deferred(restarted.stop())


@asyncio_test
async def test_graceful_shutdown_keeps_offline_messages_still_being_stored(
        xmpp_server: RunningServer, accounts: dict[str, str]) -> None:
    """A message the server accepted for an offline user (no error, the sender's next IQ
    answered) is still there after a graceful stop and restart, even when the store is
    slow (simulated: each append waits 0.3 s first, as under disk or thread-pool load)."""
    from twisted.internet import reactor, task

    from tigasepy.storage.interfaces import IOfflineStore

    store = xmpp_server.service.stores.get(IOfflineStore)
    append = store.append
    store.append = lambda *args, **kwargs: task.deferLater(reactor, 0.3, append, *args, **kwargs)

    first = ClientPool(xmpp_server)
    try:
        alice = await first.login("alice", resource="a", available=True)
        alice.send_message(mto="bob@localhost", mbody="accepted just before shutdown", mtype="chat")
        await alice.ping_server()
        assert not alice.messages.items, "the message was bounced"
    finally:
        await first.close_all()
    await from_deferred(xmpp_server.stop())
    await asyncio.sleep(0.5)  # bounded: let the delayed append run (and fail) after the stop

    restarted = await from_deferred(start_server(xmpp_server.config.data_path, reactor))
    try:
        stored = await from_deferred(restarted.service.stores.get(IOfflineStore).count("bob@localhost"))
        assert stored == 1
    finally:
        await from_deferred(restarted.stop())
