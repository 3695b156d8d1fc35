"""Message Carbons (XEP-0280): enabling, sent and received copies, eligibility."""

from __future__ import annotations

import pytest

from tests.support.sm_harness import SMHarness
from tigasepy.extensions.carbons import NS_CARBONS, MessageCarbons, eligible
from tigasepy.extensions.disco import ServiceDiscovery
from tigasepy.extensions.mam import NS_FORWARD, NS_SID, MamConfig, MessageArchive
from tigasepy.extensions.message import MessageDelivery
from tigasepy.extensions.offline import OfflineConfig, OfflineMessages
from tigasepy.storage.interfaces import ArchiveQuery, IAccountStore, IArchiveStore, IOfflineStore, IRosterStore
from tigasepy.storage.memory import MemoryAccountStore, MemoryArchiveStore, MemoryOfflineStore, MemoryRosterStore
from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp import namespaces as ns

ALICE, BOB = "alice@example.org", "bob@example.org"


@pytest.fixture
def stores():
    accounts = MemoryAccountStore()
    for user in ("alice", "bob"):
        accounts.create(f"{user}@example.org", [])
    return {IAccountStore: accounts, IRosterStore: MemoryRosterStore(), IOfflineStore: MemoryOfflineStore(),
            IArchiveStore: MemoryArchiveStore()}


@pytest.fixture
def world(stores):
    return SMHarness([(ServiceDiscovery, None), (MessageDelivery, None), (OfflineMessages, OfflineConfig()),
                      (MessageArchive, MamConfig()), (MessageCarbons, None)], stores)


def online(world, full, priority=0, carbons=True):
    session = world.connect(full)
    bound = world.sm.session(session.jid.full())
    bound.available, bound.priority = True, priority
    if carbons:
        enable(world, session)
    return session


def enable(world, session, what="enable"):
    world.send(session, f"<iq type='set' id='c1'><{what} xmlns='{NS_CARBONS}'/></iq>")
    [reply] = session.take()
    assert (reply["type"], reply["id"]) == ("result", "c1")


def carbon(stanza):
    """(direction, forwarded message) of a carbon copy, or None."""
    for direction in ("sent", "received"):
        for container in stanza.elements(NS_CARBONS, direction):
            [forwarded] = container.elements(NS_FORWARD, "forwarded")
            [inner] = [c for c in forwarded.elements() if c.name == "message"]
            return direction, inner
    return None


def test_enable_and_disable_are_acknowledged_and_repeatable(world):
    a = online(world, f"{ALICE}/a", carbons=False)
    for what in ("enable", "enable", "disable", "disable"):
        enable(world, a, what)
    assert "carbons" not in world.sm.session(f"{ALICE}/a").data


def test_carbons_are_advertised_by_the_server(world):
    a = online(world, f"{ALICE}/a", carbons=False)
    world.send(a, f"<iq type='get' id='d' to='example.org'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    [reply] = a.take()
    features = {f["var"] for f in reply.firstChildElement().elements(ns.DISCO_INFO, "feature")}
    assert NS_CARBONS in features and "urn:xmpp:carbons:rules:0" not in features


def test_received_copy_goes_to_the_other_carbons_resources(world, stores):
    bob = online(world, f"{BOB}/b", carbons=False)
    a1, a2, a3 = online(world, f"{ALICE}/1"), online(world, f"{ALICE}/2"), online(world, f"{ALICE}/3", carbons=False)
    world.send(bob, f"<message to='{ALICE}/1' type='chat' id='x'><body>hi</body></message>")
    [original] = a1.take()
    [copy] = a2.take()
    assert a3.take() == []
    assert (copy["from"], copy["to"], copy["type"]) == (ALICE, f"{ALICE}/2", "chat")
    direction, inner = carbon(copy)
    assert direction == "received"
    assert (inner["from"], inner["to"], str(inner.body)) == (f"{BOB}/b", f"{ALICE}/1", "hi")
    [entry] = stores[IArchiveStore].query(ALICE, ArchiveQuery(), 10).result
    assert [(s["by"], s["id"]) for s in inner.elements(NS_SID, "stanza-id")] == [(ALICE, entry.id)]
    assert "xmlns='jabber:client'" in _serialized(copy)


def _serialized(stanza):
    from tigasepy.xmpp.serialize import to_xml
    return to_xml(stanza)


def test_a_bare_jid_message_copies_only_to_resources_that_did_not_get_it(world):
    bob = online(world, f"{BOB}/b", carbons=False)
    top, top2, low = online(world, f"{ALICE}/top", 5), online(world, f"{ALICE}/top2", 5), online(world, f"{ALICE}/low", 1)
    world.send(bob, f"<message to='{ALICE}' type='chat'><body>hi</body></message>")
    assert [carbon(m) for m in top.take()] == [None]
    assert [carbon(m) for m in top2.take()] == [None]
    [copy] = low.take()
    assert carbon(copy)[0] == "received"


def test_sent_copy_goes_to_the_senders_other_resources_even_if_the_sender_has_carbons_off(world, stores):
    online(world, f"{BOB}/b", carbons=False)
    a1, a2, a3 = online(world, f"{ALICE}/1", carbons=False), online(world, f"{ALICE}/2"), online(world, f"{ALICE}/3")
    world.send(a1, f"<message to='{BOB}' type='chat' id='s1'><body>yo</body><thread>t</thread></message>")
    assert a1.take() == []
    entry = stores[IArchiveStore].query(ALICE, ArchiveQuery(), 10).result[0]
    for session in (a2, a3):
        [copy] = session.take()
        assert (copy["from"], copy["to"]) == (ALICE, session.jid.full())
        direction, inner = carbon(copy)
        assert direction == "sent"
        assert (inner["from"], inner["to"], inner["id"], str(inner.body)) == (f"{ALICE}/1", BOB, "s1", "yo")
        assert [(s["by"], s["id"]) for s in inner.elements(NS_SID, "stanza-id")] == [(ALICE, entry.id)]


def test_the_sending_resource_gets_no_copy_of_its_own_message(world):
    online(world, f"{BOB}/b", carbons=False)
    a1 = online(world, f"{ALICE}/1")
    world.send(a1, f"<message to='{BOB}' type='chat'><body>yo</body></message>")
    assert a1.take() == []


def test_sent_copy_of_a_message_to_a_remote_contact(world):
    a1, a2 = online(world, f"{ALICE}/1"), online(world, f"{ALICE}/2")
    world.send(a1, "<message to='romeo@remote.example' type='chat'><body>yo</body></message>")
    [copy] = a2.take()
    assert carbon(copy)[1]["to"] == "romeo@remote.example"
    [out] = world.router.routed
    assert not list(out.elements(NS_SID, "stanza-id")) and carbon(out) is None


@pytest.mark.parametrize("payload", [
    f"<private xmlns='{NS_CARBONS}'/><no-copy xmlns='urn:xmpp:hints'/>",
    f"<private xmlns='{NS_CARBONS}'/>",
    "<no-copy xmlns='urn:xmpp:hints'/>",
])
def test_private_messages_are_not_copied_either_way(world, payload):
    bob = online(world, f"{BOB}/b")
    b2 = online(world, f"{BOB}/b2")
    a1, a2 = online(world, f"{ALICE}/1"), online(world, f"{ALICE}/2")
    world.send(a1, f"<message to='{BOB}/b' type='chat'><body>secret</body>{payload}</message>")
    assert a2.take() == [] and b2.take() == []
    [original] = bob.take()
    assert list(original.elements(NS_CARBONS, "private")) or list(original.elements("urn:xmpp:hints", "no-copy"))


def test_message_kept_offline_gets_no_copies(world, stores):
    a1 = online(world, f"{ALICE}/1")
    world.send(a1, f"<message to='{BOB}' type='chat'><body>later</body></message>")
    bob_neg = world.connect(f"{BOB}/neg")
    enable(world, bob_neg)
    world.send(a1, f"<message to='{BOB}' type='chat'><body>later 2</body></message>")
    assert bob_neg.take() == []
    assert stores[IOfflineStore].count(BOB).result == 2


def test_disabled_resources_get_nothing(world):
    bob = online(world, f"{BOB}/b", carbons=False)
    a1, a2 = online(world, f"{ALICE}/1"), online(world, f"{ALICE}/2")
    enable(world, a2, "disable")
    world.send(bob, f"<message to='{ALICE}/1' type='chat'><body>hi</body></message>")
    world.send(a1, f"<message to='{BOB}' type='chat'><body>hi</body></message>")
    assert a2.take() == []


@pytest.mark.parametrize("stanza,inbound,expected", [
    ("<message type='chat'><body>x</body></message>", True, True),
    ("<message type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>", True, True),
    ("<message><body>x</body></message>", True, True),
    ("<message type='normal'/>", True, False),
    ("<message><received xmlns='urn:xmpp:receipts' id='1'/></message>", False, True),
    ("<message><displayed xmlns='urn:xmpp:chat-markers:0' id='1'/></message>", False, True),
    ("<message><active xmlns='http://jabber.org/protocol/chatstates'/></message>", False, True),
    ("<message type='groupchat'><body>x</body></message>", True, False),
    ("<message type='headline'><body>x</body></message>", True, False),
    ("<message type='error'><body>x</body></message>", True, False),
    ("<message><x xmlns='jabber:x:conference' jid='room@muc.example.org'/></message>", True, True),
    ("<message from='room@muc.example.org'><x xmlns='http://jabber.org/protocol/muc#user'><invite from='a@b'/></x></message>",
     True, True),
    ("<message from='room@muc.example.org/nick' type='chat'><body>pm</body>"
     "<x xmlns='http://jabber.org/protocol/muc#user'/></message>", True, False),
    ("<message to='room@muc.example.org/nick' type='chat'><body>pm</body>"
     "<x xmlns='http://jabber.org/protocol/muc#user'/></message>", False, True),
    (f"<message type='chat'><sent xmlns='{NS_CARBONS}'><forwarded xmlns='{NS_FORWARD}'/></sent></message>", True, False),
    (f"<message type='chat'><body>x</body><private xmlns='{NS_CARBONS}'/></message>", False, False),
])
def test_eligibility_rules(stanza, inbound, expected):
    element = parse_stanza(stanza)
    assert eligible(element, element.getAttribute("type") or "normal", inbound) is expected


def test_a_received_carbon_from_outside_is_delivered_as_is_and_not_copied(world):
    bob = online(world, f"{BOB}/b", carbons=False)
    a1, a2 = online(world, f"{ALICE}/1"), online(world, f"{ALICE}/2")
    forged = (f"<message to='{ALICE}/1' type='chat'><received xmlns='{NS_CARBONS}'><forwarded xmlns='{NS_FORWARD}'>"
              f"<message xmlns='jabber:client' from='x@y' to='{ALICE}'><body>fake</body></message>"
              "</forwarded></received></message>")
    world.send(bob, forged)
    [got] = a1.take()
    assert carbon(got)[0] == "received" and got["from"] == f"{BOB}/b", "the client sees who really sent it"
    assert a2.take() == []


def test_unloading_carbons_stops_copies(world):
    bob = online(world, f"{BOB}/b", carbons=False)
    online(world, f"{ALICE}/1")
    a2 = online(world, f"{ALICE}/2")
    world.sm.unload_extension("carbons")
    world.send(bob, f"<message to='{ALICE}/1' type='chat'><body>hi</body></message>")
    assert a2.take() == []


def test_a_redelivered_message_gets_no_second_copies(world):
    bob = online(world, f"{BOB}/b", carbons=False)
    a1, a2 = online(world, f"{ALICE}/1"), online(world, f"{ALICE}/2")
    world.send(bob, f"<message to='{ALICE}/1' type='chat'><body>hi</body></message>")
    [original] = a1.take()
    assert len(a2.take()) == 1
    world.disconnect(a1)
    a3 = online(world, f"{ALICE}/3", priority=5)
    world.sm.redeliver(original)                 # unacknowledged when alice/1's session ended (XEP-0198)
    assert [carbon(m) for m in a3.take()] == [None], "delivered again by the bare-JID rules"
    assert a2.take() == [], "a2 had its copy already"
