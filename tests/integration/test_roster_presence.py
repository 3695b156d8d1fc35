"""Roster, presence subscriptions, presence and chat between real slixmpp clients (RFC 6121)."""

from __future__ import annotations

import pytest

from support.server import extension_available
from support.xmpp_clients import (
    CLIENT, ClientPool, asyncio_test, befriend, fetch_roster, is_chat, is_presence, is_push_for, online,
    stanza_text,
)

pytestmark = pytest.mark.skipif(
    not (extension_available("roster") and extension_available("presence")),
    reason="the roster and presence extensions have not landed yet")


@asyncio_test
async def test_mutual_subscription_then_presence_and_chat(clients: ClientPool) -> None:
    """alice and bob subscribe to each other, see each other's presence, chat through bare
    JIDs, and bob sees alice go unavailable when she logs out."""
    alice = await online(clients, "alice", "home")
    bob = await online(clients, "bob", "work")
    a, b = "alice@localhost", "bob@localhost"

    # alice -> bob: subscribe
    alice.send_presence(pto=b, ptype="subscribe")
    await alice.roster_pushes.wait_for(is_push_for(b, subscription="none", ask="subscribe"),
                                       what="push: bob none + ask")
    request = await bob.presences.wait_for(is_presence("subscribe", a), what="subscribe from alice")
    assert request.xml.get("from") == a, "subscription requests come from the bare JID"

    # bob approves
    bob.send_presence(pto=a, ptype="subscribed")
    await bob.roster_pushes.wait_for(is_push_for(a, subscription="from"), what="push: alice from")
    await alice.presences.wait_for(is_presence("subscribed", b), what="subscribed from bob")
    await alice.roster_pushes.wait_for(is_push_for(b, subscription="to", ask=None), what="push: bob to")
    seen = await alice.presences.wait_for(is_presence(None, b), what="bob's available presence")
    assert seen.xml.get("from") == "bob@localhost/work"

    # bob -> alice: subscribe, alice approves
    bob.send_presence(pto=a, ptype="subscribe")
    await alice.presences.wait_for(is_presence("subscribe", b), what="subscribe from bob")
    alice.send_presence(pto=b, ptype="subscribed")
    await alice.roster_pushes.wait_for(is_push_for(b, subscription="both"), what="push: bob both")
    await bob.roster_pushes.wait_for(is_push_for(a, subscription="both"), what="push: alice both")
    seen = await bob.presences.wait_for(is_presence(None, a), what="alice's available presence")
    assert seen.xml.get("from") == "alice@localhost/home"

    assert (await fetch_roster(alice))[b]["subscription"] == "both"
    assert (await fetch_roster(bob))[a]["subscription"] == "both"

    # chat through bare JIDs
    alice.send_message(mto=b, mbody="hello bob", mtype="chat")
    got = await bob.messages.wait_for(is_chat("hello bob"), what="alice's message")
    assert got.xml.get("from") == "alice@localhost/home"
    bob.send_message(mto=a, mbody="hello alice", mtype="chat")
    got = await alice.messages.wait_for(is_chat("hello alice"), what="bob's reply")
    assert got.xml.get("from") == "bob@localhost/work"

    # presence changes and logout reach the contact
    alice.send_presence(pshow="away", pstatus="lunch")
    away = await bob.presences.wait_for(is_presence(None, a), what="alice away")
    assert stanza_text(away, f"{{{CLIENT}}}show") == "away"
    await alice.close()
    gone = await bob.presences.wait_for(is_presence("unavailable", a), what="alice unavailable")
    assert gone.xml.get("from") == "alice@localhost/home"


@asyncio_test
async def test_presence_is_not_shared_without_subscription(clients: ClientPool) -> None:
    """Without a subscription, carol does not see bob's presence."""
    carol = await online(clients, "carol", "c")
    bob = await online(clients, "bob", "b")
    bob.send_presence(pshow="dnd")
    await bob.presences.wait_for(is_presence(None, "bob@localhost"), what="bob's own echo")
    await bob.ping_server()
    await carol.ping_server()
    assert carol.presences.take(is_presence(None, "bob@localhost")) is None


@asyncio_test
async def test_subscription_request_to_an_offline_user_is_delivered_at_login(clients: ClientPool) -> None:
    """A subscribe sent while bob is offline is kept and shown to him when he comes online."""
    alice = await online(clients, "alice", "home")
    alice.send_presence(pto="bob@localhost", ptype="subscribe")
    await alice.roster_pushes.wait_for(is_push_for("bob@localhost", ask="subscribe"), what="push: ask")
    bob = await clients.login("bob", resource="late")
    await fetch_roster(bob)
    bob.send_presence()
    await bob.presences.wait_for(is_presence("subscribe", "alice@localhost"), what="pending subscribe")


@asyncio_test
async def test_roster_pushes_reach_every_interested_resource(clients: ClientPool) -> None:
    """A roster change made by one resource is pushed to both resources that fetched the
    roster, and not to a resource that never asked for it (RFC 6121 2.1.6)."""
    phone = await online(clients, "alice", "phone")
    laptop = await online(clients, "alice", "laptop")
    quiet = await clients.login("alice", resource="quiet")  # never requests the roster
    carol = "carol@localhost"

    await phone.update_roster(carol, name="Carol", groups=["Friends"], timeout=5)
    for resource in (phone, laptop):
        push = await resource.roster_pushes.wait_for(is_push_for(carol, name="Carol", subscription="none"),
                                                     what="push: carol added")
        assert push.xml.get("from") in (None, "alice@localhost"), "pushes come from the account itself"

    # a subscription change is pushed too
    laptop.send_presence(pto=carol, ptype="subscribe")
    for resource in (phone, laptop):
        await resource.roster_pushes.wait_for(is_push_for(carol, ask="subscribe"), what="push: ask")

    # removal from the other resource
    await laptop.update_roster(carol, subscription="remove", timeout=5)
    for resource in (phone, laptop):
        await resource.roster_pushes.wait_for(is_push_for(carol, subscription="remove"), what="push: remove")

    await quiet.ping_server()
    assert quiet.roster_pushes.items == [], "a resource that never fetched the roster got pushes"
    assert carol not in await fetch_roster(phone)


@asyncio_test
async def test_login_probe_brings_in_the_presence_of_online_contacts(clients: ClientPool) -> None:
    """After a mutual subscription, alice logging in again gets bob's current presence
    (the server probes bob for her), and bob gets alice's new resource's presence."""
    alice = await online(clients, "alice", "home")
    bob = await online(clients, "bob", "work")
    await befriend(alice, bob)
    bob.send_presence(pshow="xa", pstatus="far away")
    await alice.presences.wait_for(is_presence(None, "bob@localhost"), what="bob xa")
    await alice.close()
    await bob.presences.wait_for(is_presence("unavailable", "alice@localhost"), what="alice left")

    again = await clients.login("alice", resource="mobile")
    again.send_presence()
    probed = await again.presences.wait_for(is_presence(None, "bob@localhost/work"), what="bob's presence")
    assert stanza_text(probed, f"{{{CLIENT}}}show") == "xa"
    await bob.presences.wait_for(is_presence(None, "alice@localhost/mobile"), what="alice's new resource")


@asyncio_test
async def test_bare_jid_message_goes_to_the_highest_priority_resources(clients: ClientPool) -> None:
    """A chat message to alice's bare JID reaches her resource with the highest priority
    only; a resource with negative priority never gets it (RFC 6121 8.5.2.1.1)."""
    low = await clients.login("alice", resource="low")
    high = await clients.login("alice", resource="high")
    hidden = await clients.login("alice", resource="hidden")
    low.send_presence(ppriority=1)
    high.send_presence(ppriority=10)
    hidden.send_presence(ppriority=-5)
    bob = await clients.login("bob", resource="b")
    for client in (low, high, hidden):
        await client.ping_server()

    bob.send_message(mto="alice@localhost", mbody="to the bare JID", mtype="chat")
    await high.messages.wait_for(is_chat("to the bare JID"), what="the message on the top resource")
    await bob.ping_server()
    for client in (low, hidden):
        await client.ping_server()
        assert client.messages.take(is_chat("to the bare JID")) is None, client.boundjid.full


@asyncio_test
async def test_abrupt_disconnect_sends_unavailable_to_contacts_and_directed_recipients(
        clients: ClientPool) -> None:
    """When alice's TCP connection just drops, her contact bob and carol (who only got
    directed presence) both receive unavailable from her resource (RFC 6121 4.6.3), and the
    session is gone."""
    alice = await online(clients, "alice", "a")
    bob = await online(clients, "bob", "b")
    carol = await online(clients, "carol", "c")
    await befriend(alice, bob)
    alice.send_presence(pto="carol@localhost/c")
    await carol.presences.wait_for(is_presence(None, "alice@localhost/a"), what="directed presence")

    alice.abort()  # no closing </stream:stream>
    for contact in (bob, carol):
        await contact.presences.wait_for(is_presence("unavailable", "alice@localhost/a"),
                                         what="unavailable from alice")
    assert clients.server.sessions_of("alice") == []


@asyncio_test
async def test_subscription_request_to_a_nonexistent_account_is_answered_unsubscribed(
        clients: ClientPool) -> None:
    """subscribe to ghost@localhost (no such account) comes back as unsubscribed from it."""
    alice = await online(clients, "alice", "a")
    alice.send_presence(pto="ghost@localhost", ptype="subscribe")
    await alice.presences.wait_for(is_presence("unsubscribed", "ghost@localhost"), what="unsubscribed")
    item = (await fetch_roster(alice)).get("ghost@localhost")
    assert item is not None and item["subscription"] == "none" and item["ask"] is None


@asyncio_test
async def test_roster_set_cannot_change_the_subscription_state(clients: ClientPool) -> None:
    """A roster set claiming subscription='both' changes the name but not the subscription,
    which only presence subscription stanzas change (RFC 6121 2.1.2.5)."""
    alice = await online(clients, "alice", "a")
    await alice.update_roster("carol@localhost", subscription="both", name="Carol", timeout=5)
    item = (await fetch_roster(alice))["carol@localhost"]
    assert item == {"subscription": "none", "ask": None, "name": "Carol"}
