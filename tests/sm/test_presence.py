"""Presence subscriptions and presence exchange (RFC 6121 sections 3 and 4) through the SM."""

from __future__ import annotations

import pytest
from zope.interface.verify import verifyObject

from tests.support.presence_kit import (
    iq, login, make_stores, make_world, presences, pushes, put, roster_items, row, summary,
)
from tests.support.sm_harness import condition, parse_xml
from tigasepy.config import ConfigError, section_from_dict
from tigasepy.extensions.message import MessageDelivery
from tigasepy.extensions.offline import OfflineConfig, OfflineMessages
from tigasepy.extensions.presence import PRE_APPROVAL, PresenceConfig, parse_priority
from tigasepy.interfaces import IExtension
from tigasepy.sm.events import InitialPresence, PresenceFromClient, PresenceToLocal, SessionEnded
from tigasepy.storage.interfaces import RosterItem
from tigasepy.xmpp.errors import StanzaError

ALICE = "alice@example.org"
BOB = "bob@example.org"
CAROL = "carol@example.org"
ROMEO = "romeo@example.net"


@pytest.fixture
def stores():
    return make_stores()


@pytest.fixture
def world(stores):
    return make_world(stores)


def mutual(stores, a: str, b: str) -> None:
    """Make ``a`` and ``b`` subscribed to each other."""
    put(stores, a, RosterItem(b, subscription="both"))
    put(stores, b, RosterItem(a, subscription="both"))


def remote(world, xml: str) -> None:
    """A stanza arrives from another server."""
    world.sm.deliver(parse_xml(xml))


def test_presence_extension_provides_iextension(world):
    extension, _host = world.sm.extensions["presence"]
    assert verifyObject(IExtension, extension)


# -- subscriptions ----------------------------------------------------------------------------

def test_subscription_dance_between_two_local_users(world, stores):
    alice = login(world, f"{ALICE}/home")
    bob = login(world, f"{BOB}/desk")

    world.send(alice, f"<presence to='{BOB}' type='subscribe'><status>hi</status></presence>")
    assert pushes(alice) == [{"jid": BOB, "subscription": "none", "ask": "subscribe", "groups": []}]
    [request] = presences(bob, "subscribe")
    assert (request["from"], request["to"], str(next(request.elements(None, "status")))) == (ALICE, BOB, "hi")
    assert pushes(bob) == [] and bob.sent == [] and alice.sent == []
    assert row(stores, BOB, ALICE) == RosterItem(ALICE, pending_in=True, in_roster=False)

    world.send(bob, f"<presence to='{ALICE}' type='subscribed'/>")
    assert pushes(bob) == [{"jid": ALICE, "subscription": "from", "groups": []}]
    assert pushes(alice) == [{"jid": BOB, "subscription": "to", "groups": []}]
    assert summary(presences(alice)) == [("available", f"{BOB}/desk", ALICE), ("subscribed", BOB, ALICE)]
    assert bob.sent == [] and alice.sent == []

    world.send(bob, f"<presence to='{ALICE}' type='subscribe'/>")
    assert pushes(bob) == [{"jid": ALICE, "subscription": "from", "ask": "subscribe", "groups": []}]
    assert summary(presences(alice)) == [("subscribe", BOB, ALICE)]
    world.send(alice, f"<presence to='{BOB}' type='subscribed'/>")
    assert pushes(alice) == [{"jid": BOB, "subscription": "both", "groups": []}]
    assert pushes(bob) == [{"jid": ALICE, "subscription": "both", "groups": []}]
    assert summary(presences(bob)) == [("available", f"{ALICE}/home", BOB), ("subscribed", ALICE, BOB)]
    assert row(stores, ALICE, BOB) == RosterItem(BOB, subscription="both")
    assert row(stores, BOB, ALICE) == RosterItem(ALICE, subscription="both")

    world.send(alice, "<presence><show>away</show></presence>")
    [update] = presences(bob)
    assert (update["from"], update["to"], str(next(update.elements(None, "show")))) == (
        f"{ALICE}/home", BOB, "away")


def test_subscription_processing_pushes_to_every_interested_resource(world):
    home = login(world, f"{ALICE}/home")
    phone = login(world, f"{ALICE}/phone", available=False)
    quiet = login(world, f"{ALICE}/quiet", roster=False)
    world.send(home, f"<presence to='{ROMEO}' type='subscribe'/>")
    expected = [{"jid": ROMEO, "subscription": "none", "ask": "subscribe", "groups": []}]
    assert pushes(home) == pushes(phone) == expected
    assert quiet.sent == []


def test_outbound_subscription_is_stamped_with_the_bare_jid_and_routed_to_the_bare_contact(world):
    alice = login(world, f"{ALICE}/home")
    world.send(alice, f"<presence to='{ROMEO}/orchard' type='subscribe'/>")
    [routed] = world.router.routed
    assert (routed["type"], routed["from"], routed["to"]) == ("subscribe", ALICE, ROMEO)


def test_subscription_to_oneself_is_ignored(world, stores):
    alice = login(world, f"{ALICE}/home")
    for to in (ALICE, f"{ALICE}/other", "example.org"):
        world.send(alice, f"<presence to='{to}' type='subscribe'/>")
    assert alice.sent == [] and world.router.routed == []
    assert row(stores, ALICE, ALICE) is None


def test_inbound_subscription_request_goes_only_to_available_interested_resources(world, stores):
    interested = login(world, f"{ALICE}/home")
    uninterested = login(world, f"{ALICE}/quiet", roster=False)
    unavailable = login(world, f"{ALICE}/hidden", available=False)
    remote(world, f"<presence from='{ROMEO}/orchard' to='{ALICE}/quiet' type='subscribe'/>")
    [request] = presences(interested, "subscribe")
    assert (request["from"], request["to"]) == (ROMEO, ALICE)
    assert uninterested.sent == [] and unavailable.sent == []
    assert row(stores, ALICE, ROMEO) == RosterItem(ROMEO, pending_in=True, in_roster=False)


def test_pending_request_is_not_a_roster_item(world):
    remote(world, f"<presence from='{ROMEO}' to='{ALICE}' type='subscribe'/>")
    alice = world.connect(f"{ALICE}/home")
    reply = iq(world, alice, "get", "<query xmlns='jabber:iq:roster'/>")
    assert roster_items(reply) == []


def test_pending_request_is_redelivered_at_each_initial_presence(world):
    remote(world, f"<presence from='{ROMEO}' to='{ALICE}' type='subscribe'/>")
    world.send(login(world, f"{BOB}/desk"), f"<presence to='{ALICE}' type='subscribe'/>")
    for resource in ("home", "phone"):
        alice = world.connect(f"{ALICE}/{resource}")
        world.send(alice, "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
        world.send(alice, "<presence/>")
        assert summary(presences(alice, "subscribe")) == [
            ("subscribe", BOB, ALICE), ("subscribe", ROMEO, ALICE)]


def test_repeated_request_is_not_delivered_again(world):
    alice = login(world, f"{ALICE}/home")
    remote(world, f"<presence from='{ROMEO}' to='{ALICE}' type='subscribe'/>")
    remote(world, f"<presence from='{ROMEO}' to='{ALICE}' type='subscribe'/>")
    assert len(presences(alice, "subscribe")) == 1


def test_request_from_a_subscribed_contact_is_answered_by_the_server(world, stores):
    put(stores, ALICE, RosterItem(ROMEO, subscription="from"))
    alice = login(world, f"{ALICE}/home")
    world.router.routed.clear()
    remote(world, f"<presence from='{ROMEO}' to='{ALICE}' type='subscribe'/>")
    assert alice.sent == []
    assert summary(world.router.routed) == [("available", f"{ALICE}/home", ROMEO), ("subscribed", ALICE, ROMEO)]


def test_subscription_request_to_an_unknown_account_is_answered_unsubscribed(world, stores):
    alice = login(world, f"{ALICE}/home")
    world.send(alice, "<presence to='ghost@example.org' type='subscribe'/>")
    pushed = pushes(alice)
    assert pushed[0]["ask"] == "subscribe"
    assert pushed[-1] == {"jid": "ghost@example.org", "subscription": "none", "groups": []}
    assert summary(presences(alice)) == [("unsubscribed", "ghost@example.org", ALICE)]
    assert row(stores, "ghost@example.org", ALICE) is None


@pytest.mark.parametrize("kind", ["subscribed", "unsubscribe", "unsubscribed"])
def test_other_subscription_stanzas_to_an_unknown_account_are_ignored(world, stores, kind):
    remote(world, f"<presence from='{ROMEO}' to='ghost@example.org' type='{kind}'/>")
    assert world.router.routed == [] and row(stores, "ghost@example.org", ROMEO) is None


def test_requests_from_strangers_are_bounded(stores):
    world = make_world(stores, presence=PresenceConfig(max_pending_requests=2))
    for n in range(3):
        remote(world, f"<presence from='s{n}@example.net' to='{ALICE}' type='subscribe'/>")
    assert [row(stores, ALICE, f"s{n}@example.net") is not None for n in range(3)] == [True, True, False]
    put(stores, ALICE, RosterItem("friend@example.net"))
    remote(world, f"<presence from='friend@example.net' to='{ALICE}' type='subscribe'/>")
    assert row(stores, ALICE, "friend@example.net").pending_in  # contacts in the roster are not limited


def test_denying_a_request_routes_unsubscribed_and_forgets_the_stranger(world, stores):
    alice = login(world, f"{ALICE}/home")
    remote(world, f"<presence from='{ROMEO}' to='{ALICE}' type='subscribe'/>")
    alice.take()
    world.send(alice, f"<presence to='{ROMEO}' type='unsubscribed'/>")
    assert summary(world.router.routed) == [("unsubscribed", ALICE, ROMEO)]
    assert row(stores, ALICE, ROMEO) is None and pushes(alice) == []


def test_contact_cancelling_our_subscription_is_pushed_and_delivered(world, stores):
    put(stores, ALICE, RosterItem(ROMEO, subscription="both"))
    alice = login(world, f"{ALICE}/home")
    remote(world, f"<presence from='{ROMEO}/orchard' to='{ALICE}' type='unsubscribed'/>")
    assert pushes(alice) == [{"jid": ROMEO, "subscription": "from", "groups": []}]
    assert summary(presences(alice)) == [("unsubscribed", ROMEO, ALICE)]


def test_contact_unsubscribing_from_us_gets_our_unavailable(world, stores):
    put(stores, ALICE, RosterItem(ROMEO, subscription="from"))
    alice = login(world, f"{ALICE}/home")
    world.router.routed.clear()
    remote(world, f"<presence from='{ROMEO}' to='{ALICE}' type='unsubscribe'/>")
    assert pushes(alice) == [{"jid": ROMEO, "subscription": "none", "groups": []}]
    assert summary(presences(alice)) == [("unsubscribe", ROMEO, ALICE)]
    assert summary(world.router.routed) == [("unavailable", f"{ALICE}/home", ROMEO)]


def test_cancelling_a_subscribers_subscription_withdraws_presence(world, stores):
    put(stores, ALICE, RosterItem(ROMEO, subscription="from"))
    alice = login(world, f"{ALICE}/home")
    world.router.routed.clear()
    world.send(alice, f"<presence to='{ROMEO}' type='unsubscribed'/>")
    assert summary(world.router.routed) == [("unavailable", f"{ALICE}/home", ROMEO),
                                            ("unsubscribed", ALICE, ROMEO)]
    assert pushes(alice) == [{"jid": ROMEO, "subscription": "none", "groups": []}]


# -- pre-approval (RFC 6121 3.4) ----------------------------------------------------------------

def test_pre_approval_is_advertised_on_authenticated_streams_only(world):
    [feature] = [f for f in world.sm.features_for("example.org", True) if f.uri == PRE_APPROVAL]
    assert feature.name == "sub"
    assert not [f for f in world.sm.features_for("example.org", False) if f.uri == PRE_APPROVAL]


def test_pre_approval_lets_the_contact_subscribe_without_asking(world, stores):
    alice = login(world, f"{ALICE}/home")
    bob = login(world, f"{BOB}/desk")
    world.send(bob, f"<presence to='{ALICE}' type='subscribed'/>")
    assert pushes(bob) == [{"jid": ALICE, "subscription": "none", "approved": "true", "groups": []}]
    assert alice.sent == [] and world.router.routed == []

    world.send(alice, f"<presence to='{BOB}' type='subscribe'/>")
    assert presences(bob) == []
    assert pushes(bob) == [{"jid": ALICE, "subscription": "from", "groups": []}]
    assert [p["subscription"] for p in pushes(alice)] == ["none", "to"]
    assert summary(presences(alice)) == [("available", f"{BOB}/desk", ALICE), ("subscribed", BOB, ALICE)]
    assert row(stores, BOB, ALICE) == RosterItem(ALICE, subscription="from")


def test_pre_approval_can_be_cancelled(world, stores):
    bob = login(world, f"{BOB}/desk")
    world.send(bob, f"<presence to='{ROMEO}' type='subscribed'/>")
    world.send(bob, f"<presence to='{ROMEO}' type='unsubscribed'/>")
    assert [p.get("approved") for p in pushes(bob)] == ["true", None]
    assert world.router.routed == []
    remote(world, f"<presence from='{ROMEO}' to='{BOB}' type='subscribe'/>")
    assert row(stores, BOB, ROMEO).pending_in and presences(bob, "subscribe")


def test_without_pre_approval_nothing_is_advertised_and_unrequested_subscribed_is_ignored(stores):
    world = make_world(stores, presence=PresenceConfig(pre_approval=False))
    assert not [f for f in world.sm.features_for("example.org", True) if f.uri == PRE_APPROVAL]
    bob = login(world, f"{BOB}/desk")
    world.send(bob, f"<presence to='{ROMEO}' type='subscribed'/>")
    assert bob.sent == [] and world.router.routed == [] and row(stores, BOB, ROMEO) is None


# -- availability -------------------------------------------------------------------------------

def test_initial_presence_probes_contacts_and_gets_local_answers(world, stores):
    mutual(stores, ALICE, BOB)
    bob = login(world, f"{BOB}/desk")
    world.send(bob, "<presence><status>working</status></presence>")
    bob.take()
    alice = login(world, f"{ALICE}/home", available=False)
    world.send(alice, "<presence/>")
    got = presences(alice)
    assert summary(got) == [("available", f"{ALICE}/home", f"{ALICE}/home"),
                            ("available", f"{BOB}/desk", f"{ALICE}/home")]
    [answer] = [p for p in got if p["from"] == f"{BOB}/desk"]
    assert str(next(answer.elements(None, "status"))) == "working"
    assert summary(presences(bob)) == [("available", f"{ALICE}/home", BOB)]


def test_initial_presence_probes_remote_contacts_from_the_new_resource(world, stores):
    put(stores, ALICE, RosterItem(ROMEO, subscription="to"))
    put(stores, ALICE, RosterItem("juliet@example.net", subscription="from"))
    put(stores, ALICE, RosterItem("nurse@example.net", subscription="none", ask=True))
    login(world, f"{ALICE}/home")
    assert summary(world.router.routed) == [("available", f"{ALICE}/home", "juliet@example.net"),
                                            ("probe", f"{ALICE}/home", ROMEO)]


def test_initial_presence_reaches_own_resources_and_fires_initial_presence(world):
    seen = []
    world.sm.hooks.add(InitialPresence, lambda event: seen.append((event.session.full, event.stanza.name)))
    phone = login(world, f"{ALICE}/phone")
    seen.clear()
    home = world.connect(f"{ALICE}/home")
    unavailable = login(world, f"{ALICE}/idle", available=False)
    world.send(home, "<presence><priority>5</priority></presence>")
    assert summary(presences(home)) == [("available", f"{ALICE}/home", f"{ALICE}/home")]
    assert summary(presences(phone)) == [("available", f"{ALICE}/home", f"{ALICE}/phone")]
    assert unavailable.sent == []
    assert seen == [(f"{ALICE}/home", "presence")]
    session = world.sm.session(f"{ALICE}/home")
    assert (session.available, session.priority) == (True, 5)


def test_later_presence_is_broadcast_without_probes_or_initial_presence(world, stores):
    put(stores, ALICE, RosterItem(ROMEO, subscription="both"))
    seen = []
    world.sm.hooks.add(InitialPresence, seen.append)
    alice = login(world, f"{ALICE}/home")
    world.router.routed.clear()
    world.send(alice, "<presence><show>dnd</show><priority>-3</priority></presence>")
    assert summary(world.router.routed) == [("available", f"{ALICE}/home", ROMEO)]
    assert len(seen) == 1
    assert world.sm.session(f"{ALICE}/home").priority == -3


def test_negative_priority_resource_is_available_but_gets_no_bare_jid_messages(stores):
    world = make_world(stores, extra=((MessageDelivery, None),))
    mutual(stores, ALICE, BOB)
    alice = login(world, f"{ALICE}/home", priority=-1)
    session = world.sm.session(f"{ALICE}/home")
    assert (session.available, session.priority) == (True, -1)
    bob = login(world, f"{BOB}/desk")
    assert summary(presences(alice)) == [("available", f"{BOB}/desk", ALICE)]
    world.send(bob, f"<message to='{ALICE}' type='chat'><body>hi</body></message>")
    assert alice.sent == []
    assert condition(bob.sent[-1]) == "service-unavailable"


@pytest.mark.parametrize("value", ["-128", "127", " 7 ", "0"])
def test_priority_in_range_is_accepted(value):
    assert parse_priority(parse_xml(f"<presence><priority>{value}</priority></presence>")) == int(value)


@pytest.mark.parametrize("value", ["-129", "128", "high", ""])
def test_priority_out_of_range_or_not_a_number_is_bad_request(world, value):
    with pytest.raises(StanzaError):
        parse_priority(parse_xml(f"<presence><priority>{value}</priority></presence>"))
    alice = world.connect(f"{ALICE}/home")
    world.send(alice, f"<presence><priority>{value}</priority></presence>")
    [reply] = alice.sent
    assert (reply.name, reply["type"], condition(reply)) == ("presence", "error", "bad-request")
    assert not world.sm.session(f"{ALICE}/home").available


@pytest.mark.parametrize("kind", ["invisible", "available"])
def test_unknown_presence_type_is_bad_request(world, kind):
    alice = login(world, f"{ALICE}/home", available=False)
    world.send(alice, f"<presence type='{kind}'/>")
    assert condition(alice.sent[-1]) == "bad-request"
    assert not world.sm.session(f"{ALICE}/home").available


def test_initial_presence_flushes_offline_messages(stores):
    world = make_world(stores, extra=((MessageDelivery, None), (OfflineMessages, OfflineConfig())))
    bob = login(world, f"{BOB}/desk")
    world.send(bob, f"<message to='{ALICE}' type='chat'><body>while you were out</body></message>")
    alice = login(world, f"{ALICE}/home", available=False)
    world.send(alice, "<presence/>")
    assert [s.name for s in alice.sent if s.name == "message"] == ["message"]


def test_unavailable_is_broadcast_when_a_session_ends(world, stores):
    mutual(stores, ALICE, BOB)
    put(stores, ALICE, RosterItem(ROMEO, subscription="from"))
    put(stores, ALICE, RosterItem("juliet@example.net", subscription="to"))
    bob = login(world, f"{BOB}/desk")
    phone = login(world, f"{ALICE}/phone")
    home = login(world, f"{ALICE}/home")
    bob.take(), phone.take()
    world.router.routed.clear()
    world.disconnect(home)
    assert summary(presences(bob)) == [("unavailable", f"{ALICE}/home", BOB)]
    assert summary(presences(phone)) == [("unavailable", f"{ALICE}/home", f"{ALICE}/phone")]
    assert summary(world.router.routed) == [("unavailable", f"{ALICE}/home", ROMEO)]


def test_session_that_never_was_available_ends_silently(world, stores):
    mutual(stores, ALICE, BOB)
    bob = login(world, f"{BOB}/desk")
    alice = login(world, f"{ALICE}/home", available=False)
    world.disconnect(alice)
    assert bob.sent == [] and world.router.routed == []


def test_explicit_unavailable_is_broadcast_and_echoed(world, stores):
    mutual(stores, ALICE, BOB)
    bob = login(world, f"{BOB}/desk")
    alice = login(world, f"{ALICE}/home")
    bob.take()
    world.send(alice, "<presence type='unavailable'><status>bye</status></presence>")
    assert summary(presences(alice)) == [("unavailable", f"{ALICE}/home", f"{ALICE}/home")]
    [gone] = presences(bob)
    assert (gone["type"], str(next(gone.elements(None, "status")))) == ("unavailable", "bye")
    assert not world.sm.session(f"{ALICE}/home").available
    world.disconnect(alice)
    assert bob.sent == []


def test_directed_presence_gets_unavailable_when_the_session_ends(world, stores):
    put(stores, ALICE, RosterItem(ROMEO, subscription="from"))
    carol = login(world, f"{CAROL}/lab")
    alice = login(world, f"{ALICE}/home")
    world.send(alice, f"<presence to='{CAROL}'><show>chat</show></presence>")
    world.send(alice, "<presence to='room@muc.example.net/alice'/>")
    world.send(alice, f"<presence to='{ROMEO}/orchard'/>")
    assert summary(presences(carol)) == [("available", f"{ALICE}/home", CAROL)]
    world.router.routed.clear()
    world.disconnect(alice)
    assert summary(presences(carol)) == [("unavailable", f"{ALICE}/home", CAROL)]
    assert summary(world.router.routed) == [("unavailable", f"{ALICE}/home", ROMEO),
                                            ("unavailable", f"{ALICE}/home", "room@muc.example.net/alice")]


def test_directed_presence_is_not_broadcast_to_later(world):
    carol = login(world, f"{CAROL}/lab")
    alice = login(world, f"{ALICE}/home")
    world.send(alice, f"<presence to='{CAROL}'/>")
    carol.take()
    world.send(alice, "<presence><show>away</show></presence>")
    assert carol.sent == []


def test_directed_unavailable_ends_tracking(world):
    alice = login(world, f"{ALICE}/home")
    world.send(alice, "<presence to='room@muc.example.net/alice'/>")
    world.send(alice, "<presence to='room@muc.example.net/alice' type='unavailable'/>")
    world.router.routed.clear()
    world.disconnect(alice)
    assert world.router.routed == []


def test_directed_presence_before_initial_presence_still_gets_unavailable(world):
    alice = login(world, f"{ALICE}/home", available=False)
    world.send(alice, "<presence to='room@muc.example.net/alice'/>")
    world.router.routed.clear()
    world.disconnect(alice)
    assert summary(world.router.routed) == [("unavailable", f"{ALICE}/home", "room@muc.example.net/alice")]


def test_directed_presence_is_bounded(stores):
    world = make_world(stores, presence=PresenceConfig(max_directed=2))
    alice = login(world, f"{ALICE}/home")
    for n in range(2):
        world.send(alice, f"<presence to='r{n}@muc.example.net/a'/>")
    world.send(alice, "<presence to='r2@muc.example.net/a'/>")
    assert condition(alice.sent[-1]) == "resource-constraint"
    assert len(world.sm.session(f"{ALICE}/home").directed) == 2


def test_presence_to_own_bare_jid_reaches_own_available_resources(world):
    phone = login(world, f"{ALICE}/phone")
    idle = login(world, f"{ALICE}/idle", available=False)
    home = login(world, f"{ALICE}/home")
    phone.take()
    world.send(home, f"<presence to='{ALICE}'><status>note</status></presence>")
    assert len(presences(phone)) == 1 and len(presences(home)) == 1 and idle.sent == []
    assert world.sm.session(f"{ALICE}/home").directed == set()


# -- inbound presence and probes --------------------------------------------------------------

def test_presence_to_a_bare_jid_goes_to_every_available_resource(world):
    home = login(world, f"{ALICE}/home")
    phone = login(world, f"{ALICE}/phone")
    idle = login(world, f"{ALICE}/idle", available=False)
    home.take()
    remote(world, f"<presence from='{ROMEO}/orchard' to='{ALICE}'/>")
    assert len(presences(home)) == len(presences(phone)) == 1
    assert idle.sent == []


def test_presence_to_a_full_jid_goes_to_that_resource_only(world):
    home = login(world, f"{ALICE}/home")
    phone = login(world, f"{ALICE}/phone")
    home.take()
    remote(world, f"<presence from='{ROMEO}/orchard' to='{ALICE}/phone' type='unavailable'/>")
    remote(world, f"<presence from='{ROMEO}/orchard' to='{ALICE}/gone'/>")
    assert summary(presences(phone)) == [("unavailable", f"{ROMEO}/orchard", f"{ALICE}/phone")]
    assert home.sent == []


def test_presence_error_goes_to_a_bound_full_jid_and_is_dropped_for_a_bare_jid(world):
    alice = login(world, f"{ALICE}/home")
    remote(world, f"<presence from='{ROMEO}' to='{ALICE}/home' type='error'/>")
    remote(world, f"<presence from='{ROMEO}' to='{ALICE}' type='error'/>")
    assert summary(presences(alice)) == [("error", ROMEO, f"{ALICE}/home")]


def test_probe_from_a_subscriber_gets_each_available_resources_last_presence(world, stores):
    put(stores, ALICE, RosterItem(ROMEO, subscription="from"))
    home = login(world, f"{ALICE}/home")
    login(world, f"{ALICE}/phone", priority=3)
    login(world, f"{ALICE}/idle", available=False)
    world.send(home, "<presence><show>xa</show></presence>")
    world.router.routed.clear()
    remote(world, f"<presence from='{ROMEO}/orchard' to='{ALICE}' type='probe'/>")
    answers = world.router.routed
    assert summary(answers) == [("available", f"{ALICE}/home", f"{ROMEO}/orchard"),
                                ("available", f"{ALICE}/phone", f"{ROMEO}/orchard")]
    [home_answer] = [a for a in answers if a["from"] == f"{ALICE}/home"]
    assert str(next(home_answer.elements(None, "show"))) == "xa"


def test_probe_from_a_subscriber_while_offline_gets_unavailable(world, stores):
    put(stores, ALICE, RosterItem(ROMEO, subscription="both"))
    remote(world, f"<presence from='{ROMEO}/orchard' to='{ALICE}' type='probe'/>")
    assert summary(world.router.routed) == [("unavailable", ALICE, f"{ROMEO}/orchard")]


@pytest.mark.parametrize("item", [None, RosterItem(ROMEO, subscription="to"), RosterItem(ROMEO, ask=True)])
def test_probe_from_someone_without_a_subscription_gets_unsubscribed(world, stores, item):
    if item is not None:
        put(stores, ALICE, item)
    login(world, f"{ALICE}/home")
    world.router.routed.clear()
    remote(world, f"<presence from='{ROMEO}/orchard' to='{ALICE}' type='probe'/>")
    assert summary(world.router.routed) == [("unsubscribed", ALICE, ROMEO)]


def test_probe_from_someone_with_a_pending_request_gets_nothing(world, stores):
    put(stores, ALICE, RosterItem(ROMEO, pending_in=True, in_roster=False))
    login(world, f"{ALICE}/home")
    world.router.routed.clear()
    remote(world, f"<presence from='{ROMEO}' to='{ALICE}' type='probe'/>")
    assert world.router.routed == []


def test_probe_to_an_unknown_account_gets_unsubscribed(world):
    remote(world, f"<presence from='{ROMEO}/orchard' to='ghost@example.org' type='probe'/>")
    assert summary(world.router.routed) == [("unsubscribed", "ghost@example.org", ROMEO)]


def test_client_probe_is_routed_and_answered_by_the_rules(world, stores):
    mutual(stores, ALICE, BOB)
    bob = login(world, f"{BOB}/desk")
    alice = login(world, f"{ALICE}/home")
    carol = login(world, f"{CAROL}/lab")
    bob.take()
    world.send(alice, f"<presence to='{BOB}' type='probe'/>")
    assert summary(presences(alice)) == [("available", f"{BOB}/desk", f"{ALICE}/home")]
    world.send(carol, f"<presence to='{BOB}' type='probe'/>")
    assert carol.sent == [] and bob.sent == []


def test_stale_subscription_is_corrected_by_the_probe_answer(world, stores):
    put(stores, CAROL, RosterItem(BOB, subscription="to"))  # bob's roster knows nothing of carol
    bob = login(world, f"{BOB}/desk")
    carol = world.connect(f"{CAROL}/lab")
    world.send(carol, "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
    world.send(carol, "<presence/>")
    assert pushes(carol) == [{"jid": BOB, "subscription": "none", "groups": []}]
    assert ("unsubscribed", BOB, CAROL) in summary(presences(carol))
    assert row(stores, CAROL, BOB) == RosterItem(BOB) and bob.sent == []


@pytest.mark.parametrize("option", ["max_pending_requests", "max_directed"])
def test_presence_config_limits_must_be_positive(option):
    assert section_from_dict(PresenceConfig, {option: 1}, ("extensions", "presence"))
    with pytest.raises(ConfigError) as e:
        section_from_dict(PresenceConfig, {option: 0}, ("extensions", "presence"))
    assert e.value.path == ("extensions", "presence", option)


def test_unloading_presence_withdraws_its_stream_feature_and_hooks(world):
    world.sm.unload_extension("presence")
    assert not [f for f in world.sm.features_for("example.org", True) if f.uri == PRE_APPROVAL]
    assert world.sm.hooks.handlers(PresenceFromClient) == []
    assert world.sm.hooks.handlers(PresenceToLocal) == []
    assert world.sm.hooks.handlers(SessionEnded) == []
