"""Message delivery rules (RFC 6121 8.5) and offline storage (XEP-0160, XEP-0203)."""

from __future__ import annotations

import pytest

from tests.support.sm_harness import SMHarness, condition
from tigasepy.extensions.message import MessageDelivery
from tigasepy.extensions.offline import OfflineConfig, OfflineMessages, delay_stamp, worth_storing
from tigasepy.sm.events import InitialPresence, SessionEvent
from tigasepy.storage.interfaces import IAccountStore, IOfflineStore, IRosterStore
from tigasepy.storage.memory import MemoryAccountStore, MemoryOfflineStore, MemoryRosterStore
from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp import namespaces as ns


@pytest.fixture
def stores():
    accounts = MemoryAccountStore()
    for user in ("alice", "bob"):
        accounts.create(f"{user}@example.org", [])
    return {IAccountStore: accounts, IRosterStore: MemoryRosterStore(), IOfflineStore: MemoryOfflineStore()}


@pytest.fixture
def world(stores):
    return SMHarness([(MessageDelivery, None), (OfflineMessages, OfflineConfig(max_per_user=3))], stores)


def available(world, session, priority=0):
    """Mark ``session`` available as the presence extension would."""
    bound = world.sm.session(session.jid.full())
    bound.available = True
    bound.priority = priority
    return bound


def test_message_to_bare_jid_goes_to_the_highest_priority_resources(world):
    low, high, also_high = (world.connect(f"bob@example.org/{r}") for r in ("low", "high", "high2"))
    available(world, low, 1)
    available(world, high, 5)
    available(world, also_high, 5)
    alice = world.connect("alice@example.org/a")
    world.send(alice, "<message to='bob@example.org' type='chat'><body>hi</body></message>")
    assert (len(low.sent), len(high.sent), len(also_high.sent)) == (0, 1, 1)


def test_negative_priority_resources_get_no_bare_messages_and_it_goes_offline(world, stores):
    bob = world.connect("bob@example.org/neg")
    available(world, bob, -1)
    alice = world.connect("alice@example.org/a")
    world.send(alice, "<message to='bob@example.org' type='chat'><body>hi</body></message>")
    assert bob.sent == []
    assert stores[IOfflineStore].count("bob@example.org").result == 1


def test_message_to_full_jid_reaches_that_resource_even_with_negative_priority(world):
    bob = world.connect("bob@example.org/neg")
    available(world, bob, -1)
    alice = world.connect("alice@example.org/a")
    world.send(alice, "<message to='bob@example.org/neg' type='chat'><body>hi</body></message>")
    [message] = bob.sent
    assert message["from"] == "alice@example.org/a"


def test_chat_to_an_unknown_full_jid_falls_back_to_the_bare_jid(world):
    bob = world.connect("bob@example.org/real")
    available(world, bob)
    alice = world.connect("alice@example.org/a")
    world.send(alice, "<message to='bob@example.org/gone' type='chat'><body>hi</body></message>")
    assert len(bob.sent) == 1


def test_headline_goes_to_every_non_negative_resource(world):
    one, two = world.connect("bob@example.org/1"), world.connect("bob@example.org/2")
    available(world, one, 0)
    available(world, two, 3)
    alice = world.connect("alice@example.org/a")
    world.send(alice, "<message to='bob@example.org' type='headline'><body>news</body></message>")
    assert (len(one.sent), len(two.sent)) == (1, 1)


def test_message_to_unknown_account_gets_service_unavailable(world):
    alice = world.connect("alice@example.org/a")
    world.send(alice, "<message to='nobody@example.org' type='chat' id='x'><body>hi</body></message>")
    [error] = alice.sent
    assert (error["type"], error["id"], condition(error)) == ("error", "x", "service-unavailable")


def test_groupchat_to_a_bare_jid_gets_service_unavailable(world):
    alice = world.connect("alice@example.org/a")
    world.send(alice, "<message to='bob@example.org' type='groupchat'><body>hi</body></message>")
    [error] = alice.sent
    assert condition(error) == "service-unavailable"


def test_error_messages_are_never_answered_with_errors(world):
    alice = world.connect("alice@example.org/a")
    world.send(alice, "<message to='nobody@example.org' type='error'><body>x</body></message>")
    assert alice.sent == []


def test_message_to_a_remote_domain_goes_to_the_router(world):
    alice = world.connect("alice@example.org/a")
    world.send(alice, "<message to='carol@remote.net'><body>hi</body></message>")
    [routed] = world.router.routed
    assert routed["from"] == "alice@example.org/a"


def test_malformed_recipient_gets_jid_malformed(world):
    alice = world.connect("alice@example.org/a")
    world.send(alice, "<message to='a@b@c@@' id='bad'><body>hi</body></message>")
    [error] = alice.sent
    assert condition(error) == "jid-malformed"


def test_offline_message_is_stored_with_a_delay_stamp_and_flushed_on_initial_presence(world, stores):
    alice = world.connect("alice@example.org/a")
    world.clock.advance(1_700_000_000)
    world.send(alice, "<message to='bob@example.org' type='chat' id='m1'><body>while you were out</body></message>")
    assert alice.sent == []
    bob = world.connect("bob@example.org/phone")
    bound = available(world, bob)
    world.sm.hooks.notify(InitialPresence, SessionEvent(bound))
    [message] = bob.sent
    delay = next(message.elements(ns.DELAY, "delay"))
    assert (str(message.body), delay["from"], delay["stamp"]) == (
        "while you were out", "example.org", delay_stamp(1_700_000_000))
    assert stores[IOfflineStore].count("bob@example.org").result == 0


def test_offline_storage_full_gets_service_unavailable(world):
    alice = world.connect("alice@example.org/a")
    for n in range(3):
        world.send(alice, f"<message to='bob@example.org' type='chat'><body>{n}</body></message>")
    assert alice.sent == []
    world.send(alice, "<message to='bob@example.org' type='chat' id='over'><body>x</body></message>")
    [error] = alice.sent
    assert (error["id"], condition(error)) == ("over", "service-unavailable")


def test_bare_chat_states_are_not_stored_offline(world, stores):
    alice = world.connect("alice@example.org/a")
    world.send(alice, "<message to='bob@example.org' type='chat'>"
                      "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    assert stores[IOfflineStore].count("bob@example.org").result == 0


@pytest.mark.parametrize("xml,expected", [
    ("<message><body>x</body></message>", True),
    ("<message><active xmlns='http://jabber.org/protocol/chatstates'/></message>", False),
    ("<message><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>", False),
    ("<message><store xmlns='urn:xmpp:hints'/></message>", True),
    ("<message><active xmlns='http://jabber.org/protocol/chatstates'/>"
     "<delay xmlns='urn:xmpp:delay' stamp='2026-01-01T00:00:00Z'/></message>", False),
])
def test_worth_storing_follows_xep_0160_and_0334(xml, expected):
    assert worth_storing(parse_stanza(xml)) is expected
