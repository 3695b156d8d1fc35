"""State that must outlive the process: a server restarted on the same data directory."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from support.server import RunningServer, extension_available, start_server
from support.xmpp_clients import (
    DELAY, ClientPool, asyncio_test, befriend, fetch_roster, from_deferred, is_chat, is_presence, online,
)

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
