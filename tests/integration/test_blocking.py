"""The blocking command (XEP-0191) and privacy lists (XEP-0016) over real sockets with slixmpp.

A blocked contact's messages, presence and IQs reach none of the user's resources;
the user's stanzas to the contact bounce with <not-acceptable/><blocked/>; unblocking
restores delivery.
"""

from __future__ import annotations

import asyncio
from xml.etree import ElementTree as ET

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError

from support.xmpp_clients import (
    CLIENT, ClientPool, TestClient, asyncio_test, befriend, is_chat, is_presence, online,
)

BLOCKING = "urn:xmpp:blocking"
BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
PRIVACY = "jabber:iq:privacy"
STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"
ALICE, BOB, CAROL = "alice@localhost", "bob@localhost", "carol@localhost"


def error_children(stanza) -> list[str]:
    """The qualified names of the children of a stanza's <error/>."""
    error = stanza.xml.find(f"{{{CLIENT}}}error")
    return [] if error is None else [child.tag for child in error]


def from_bob(stanza) -> bool:
    return stanza.xml.get("from", "").split("/", 1)[0] == BOB


async def blocking_client(clients: ClientPool, user: str, resource: str) -> TestClient:
    client = await online(clients, user, resource)
    client.register_plugin("xep_0191")
    return client


async def settle(*clients: TestClient) -> None:
    """One round trip per client, so that whatever the server sent before has arrived."""
    for client in clients:
        await client.ping_server()


@asyncio_test
async def test_a_blocked_contact_reaches_no_resource_until_unblocked(clients: ClientPool) -> None:
    """alice (two resources) blocks bob: his chat, presence and IQs reach neither resource,
    he gets service-unavailable for messages and IQs and unavailable presence from both of
    alice's resources; after unblocking everything flows again."""
    alice1 = await blocking_client(clients, "alice", "one")
    alice2 = await online(clients, "alice", "two")
    bob = await online(clients, "bob", "b")
    await befriend(alice1, bob)
    await bob.presences.wait_for(is_presence(None, "alice@localhost/two"), what="alice/two's presence")

    await alice1.plugin["xep_0191"].block(BOB, timeout=5)
    assert await alice1.plugin["xep_0191"].get_blocked_jids(timeout=5) == {bob.boundjid.bare}
    for resource in ("one", "two"):
        gone = await bob.presences.wait_for(is_presence("unavailable", f"{ALICE}/{resource}"),
                                            what=f"unavailable from alice/{resource}")
        assert gone.xml.get("to") == BOB
    await settle(alice1, alice2)
    alice1.messages.items.clear(), alice2.messages.items.clear()
    alice1.presences.items.clear(), alice2.presences.items.clear()

    bob.send_message(mto=ALICE, mbody="to the bare JID", mtype="chat")
    bob.send_message(mto=f"{ALICE}/two", mbody="to a full JID", mtype="chat")
    bounces = [await bob.messages.wait_for(lambda m: m.xml.get("type") == "error", what="a bounce")
               for _ in range(2)]
    assert all(f"{{{STANZA_ERRORS}}}service-unavailable" in error_children(b) for b in bounces)
    bob.send_presence(pshow="dnd")
    bob.send_presence(pto=f"{ALICE}/one", pstatus="directed")
    for target in (f"{ALICE}/one", f"{ALICE}/two", ALICE):
        with pytest.raises(IqError) as raised:
            await bob.plugin["xep_0199"].send_ping(target, timeout=5)
        assert raised.value.iq["error"]["condition"] == "service-unavailable"
    await settle(bob, alice1, alice2)
    for alice in (alice1, alice2):
        assert alice.messages.take(from_bob) is None
        assert alice.presences.take(from_bob) is None

    # alice's own stanzas to bob bounce with the blocked condition
    alice2.send_message(mto=BOB, mbody="can you hear me?", mtype="chat")
    refused = await alice2.messages.wait_for(lambda m: m.xml.get("type") == "error", what="not-acceptable")
    assert {f"{{{STANZA_ERRORS}}}not-acceptable", f"{{{BLOCKING_ERRORS}}}blocked"} <= set(error_children(refused))
    assert refused.xml.get("from") == BOB
    await settle(bob)
    assert bob.messages.take(is_chat("can you hear me?")) is None

    # unblock: presence comes back both ways, and so do messages and IQs
    await alice1.plugin["xep_0191"].unblock(BOB, timeout=5)
    await bob.presences.wait_for(is_presence(None, f"{ALICE}/one"), what="alice/one's presence again")
    await alice1.presences.wait_for(is_presence(None, BOB), what="bob's presence after the probe")
    bob.send_message(mto=ALICE, mbody="back again", mtype="chat")
    got = await asyncio.wait_for(_first_of(alice1, alice2, is_chat("back again")), 10)
    assert got.xml.get("from") == "bob@localhost/b"
    result = await bob.plugin["xep_0199"].send_ping(f"{ALICE}/two", timeout=5)
    assert result["type"] == "result"


async def _first_of(first: TestClient, second: TestClient, predicate):
    while True:
        for client in (first, second):
            found = client.messages.take(predicate)
            if found is not None:
                return found
        await asyncio.sleep(0.05)


@asyncio_test
async def test_messages_of_a_blocked_contact_are_not_kept_offline(clients: ClientPool) -> None:
    """alice blocks bob and logs out: bob's message bounces instead of waiting offline."""
    alice = await blocking_client(clients, "alice", "a")
    await alice.plugin["xep_0191"].block(BOB, timeout=5)
    await alice.close()
    bob = await online(clients, "bob", "b")
    bob.send_message(mto=ALICE, mbody="while you were out", mtype="chat")
    bounce = await bob.messages.wait_for(lambda m: m.xml.get("type") == "error", what="a bounce")
    assert f"{{{STANZA_ERRORS}}}service-unavailable" in error_children(bounce)
    alice = await clients.login("alice", resource="back", available=True)
    await settle(alice)
    assert alice.messages.take(is_chat("while you were out")) is None


@asyncio_test
async def test_block_and_unblock_pushes_reach_resources_that_read_the_blocklist(clients: ClientPool) -> None:
    """A second resource that fetched the blocklist gets block and unblock pushes."""
    first = await blocking_client(clients, "alice", "first")
    second = await blocking_client(clients, "alice", "second")
    pushes: asyncio.Queue = asyncio.Queue()
    second.add_event_handler("blocked", lambda iq: pushes.put_nowait(("block", iq)))
    second.add_event_handler("unblocked", lambda iq: pushes.put_nowait(("unblock", iq)))
    assert await second.plugin["xep_0191"].get_blocked_jids(timeout=5) == set()
    await first.plugin["xep_0191"].block([CAROL, "spam.example"], timeout=5)
    kind, iq = await asyncio.wait_for(pushes.get(), 5)
    assert kind == "block" and {str(i["jid"]) for i in iq["block"]} == {CAROL, "spam.example"}
    await first.plugin["xep_0191"].unblock(CAROL, timeout=5)
    kind, iq = await asyncio.wait_for(pushes.get(), 5)
    assert kind == "unblock" and [str(i["jid"]) for i in iq["unblock"]] == [CAROL]
    assert await second.plugin["xep_0191"].get_blocked_jids(timeout=5) == {JID("spam.example")}


@asyncio_test
async def test_empty_block_is_a_bad_request(clients: ClientPool) -> None:
    alice = await blocking_client(clients, "alice", "a")
    iq = alice.make_iq_set()
    iq.append(ET.Element(f"{{{BLOCKING}}}block"))
    with pytest.raises(IqError) as raised:
        await iq.send(timeout=5)
    assert raised.value.iq["error"]["condition"] == "bad-request"


@asyncio_test
async def test_a_privacy_list_blocks_messages_from_strangers(clients: ClientPool) -> None:
    """A default privacy list denying subscription 'none' stops a stranger's message, not a contact's."""
    alice = await online(clients, "alice", "a")
    bob = await online(clients, "bob", "b")
    carol = await online(clients, "carol", "c")
    await befriend(alice, bob)
    for payload in (f"<list name='contacts-only'><item type='subscription' value='none' action='deny' order='1'>"
                    "<message/></item></list>", "<default name='contacts-only'/>"):
        iq = alice.make_iq_set()
        iq.append(ET.fromstring(f"<query xmlns='{PRIVACY}'>{payload}</query>"))
        await iq.send(timeout=5)
    carol.send_message(mto=ALICE, mbody="from a stranger", mtype="chat")
    bounce = await carol.messages.wait_for(lambda m: m.xml.get("type") == "error", what="a bounce")
    assert f"{{{STANZA_ERRORS}}}service-unavailable" in error_children(bounce)
    bob.send_message(mto=ALICE, mbody="from a friend", mtype="chat")
    await alice.messages.wait_for(is_chat("from a friend"), what="bob's message")
    await settle(alice)
    assert alice.messages.take(is_chat("from a stranger")) is None
