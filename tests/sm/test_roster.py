"""Roster management (RFC 6121 section 2): get, set, remove, pushes, errors and limits."""

from __future__ import annotations

import pytest
from zope.interface.verify import verifyObject

from tests.support.presence_kit import (
    iq, login, make_stores, make_world, presences, pushes, put, roster_items, roster_set, row, summary,
)
from tests.support.sm_harness import condition
from tigasepy.config import ConfigError, section_from_dict
from tigasepy.extensions import enabled_extensions
from tigasepy.extensions.roster import Roster, RosterConfig
from tigasepy.interfaces import IExtension
from tigasepy.sm.events import AccountEvent, AccountRemoved
from tigasepy.storage.interfaces import IRosterStore, RosterItem

ALICE = "alice@example.org"
ROMEO = "romeo@example.net"


@pytest.fixture
def stores():
    return make_stores()


@pytest.fixture
def world(stores):
    return make_world(stores, roster=RosterConfig(max_items=5, max_name_length=10, max_groups=2,
                                                  max_group_length=8))


def test_roster_extension_provides_iextension(world):
    extension, _host = world.sm.extensions["roster"]
    assert verifyObject(IExtension, extension)


def test_roster_is_a_builtin_enabled_by_default():
    loaded = dict(enabled_extensions({}))
    assert loaded[Roster] == RosterConfig()


def test_roster_get_returns_the_visible_items_and_makes_the_resource_interested(world, stores):
    put(stores, ALICE, RosterItem(ROMEO, name="Romeo", subscription="both", groups=("Friends",)))
    put(stores, ALICE, RosterItem("nurse@example.net", pending_in=True, in_roster=False))
    alice = world.connect(f"{ALICE}/home")
    assert not world.sm.session(f"{ALICE}/home").interested
    reply = iq(world, alice, "get", "<query xmlns='jabber:iq:roster'/>")
    assert reply["type"] == "result" and reply["to"] == f"{ALICE}/home"
    assert roster_items(reply) == [{"jid": ROMEO, "name": "Romeo", "subscription": "both", "groups": ["Friends"]}]
    assert world.sm.session(f"{ALICE}/home").interested


def test_roster_get_of_an_empty_roster_is_an_empty_query(world):
    alice = world.connect(f"{ALICE}/home")
    reply = iq(world, alice, "get", "<query xmlns='jabber:iq:roster'/>", to=ALICE)
    assert reply["type"] == "result" and roster_items(reply) == []


def test_roster_set_pushes_to_every_interested_resource(world, stores):
    home = login(world, f"{ALICE}/home", available=False)
    work = login(world, f"{ALICE}/work")
    idle = login(world, f"{ALICE}/idle", roster=False)
    reply = roster_set(world, home, f"<item jid='{ROMEO}' name='Romeo'><group>Friends</group></item>")
    assert reply["type"] == "result"
    expected = [{"jid": ROMEO, "name": "Romeo", "subscription": "none", "groups": ["Friends"]}]
    assert pushes(home) == expected
    assert pushes(work) == expected
    assert pushes(idle) == [] and idle.sent == []
    assert row(stores, ALICE, ROMEO) == RosterItem(ROMEO, name="Romeo", groups=("Friends",))


def test_roster_pushes_carry_fresh_ids(world):
    home = login(world, f"{ALICE}/home")
    roster_set(world, home, f"<item jid='{ROMEO}'/>", iq_id="a")
    roster_set(world, home, f"<item jid='{ROMEO}' name='R'/>", iq_id="b")
    ids = [s["id"] for s in home.sent if s.name == "iq" and s["type"] == "set"]
    assert len(ids) == 2 and len(set(ids)) == 2 and not {"a", "b"} & set(ids)


def test_roster_set_updates_name_and_groups_but_never_the_subscription(world, stores):
    put(stores, ALICE, RosterItem(ROMEO, name="Romeo", subscription="to", groups=("Old",)))
    home = login(world, f"{ALICE}/home")
    roster_set(world, home, f"<item jid='{ROMEO}' subscription='both' ask='subscribe' approved='true'>"
                            "<group>New</group><group>Work</group></item>")
    assert row(stores, ALICE, ROMEO) == RosterItem(ROMEO, name=None, subscription="to", groups=("New", "Work"))
    assert pushes(home) == [{"jid": ROMEO, "subscription": "to", "groups": ["New", "Work"]}]


def test_roster_set_makes_a_hidden_pending_row_visible_and_keeps_the_request(world, stores):
    put(stores, ALICE, RosterItem(ROMEO, pending_in=True, in_roster=False))
    home = login(world, f"{ALICE}/home")
    roster_set(world, home, f"<item jid='{ROMEO}' name='Romeo'/>")
    assert row(stores, ALICE, ROMEO) == RosterItem(ROMEO, name="Romeo", pending_in=True)


def test_roster_set_prepares_the_jid(world, stores):
    home = login(world, f"{ALICE}/home")
    roster_set(world, home, "<item jid='Romeo@Example.NET'/>")
    assert row(stores, ALICE, ROMEO) is not None


def test_roster_remove_pushes_remove_and_cancels_both_directions(world, stores):
    put(stores, ALICE, RosterItem(ROMEO, subscription="both"))
    home = login(world, f"{ALICE}/home")
    other = login(world, f"{ALICE}/other")
    world.router.routed.clear()
    reply = roster_set(world, home, f"<item jid='{ROMEO}' subscription='remove'/>")
    assert reply["type"] == "result"
    assert pushes(home) == pushes(other) == [{"jid": ROMEO, "subscription": "remove", "groups": []}]
    assert row(stores, ALICE, ROMEO) is None
    assert summary(world.router.routed) == sorted([
        ("unsubscribe", ALICE, ROMEO), ("unsubscribed", ALICE, ROMEO),
        ("unavailable", f"{ALICE}/home", ROMEO), ("unavailable", f"{ALICE}/other", ROMEO)])


@pytest.mark.parametrize("item, routed", [
    (RosterItem(ROMEO, subscription="to"), [("unsubscribe", ALICE, ROMEO)]),
    (RosterItem(ROMEO, subscription="none", ask=True), [("unsubscribe", ALICE, ROMEO)]),
    (RosterItem(ROMEO, subscription="none", pending_in=True), [("unsubscribed", ALICE, ROMEO)]),
    (RosterItem(ROMEO, subscription="none"), []),
])
def test_roster_remove_sends_what_the_subscription_state_requires(world, stores, item, routed):
    put(stores, ALICE, item)
    home = login(world, f"{ALICE}/home")
    world.router.routed.clear()
    roster_set(world, home, f"<item jid='{ROMEO}' subscription='remove'/>")
    assert summary(world.router.routed) == routed


def test_roster_remove_of_an_unknown_item_is_item_not_found(world, stores):
    put(stores, ALICE, RosterItem(ROMEO, pending_in=True, in_roster=False))
    home = login(world, f"{ALICE}/home")
    for contact in (ROMEO, "nobody@example.net"):
        reply = roster_set(world, home, f"<item jid='{contact}' subscription='remove'/>")
        assert condition(reply) == "item-not-found"
    assert pushes(home) == []
    assert row(stores, ALICE, ROMEO) is not None


def test_roster_set_with_two_items_is_bad_request(world, stores):
    home = login(world, f"{ALICE}/home")
    reply = roster_set(world, home, f"<item jid='{ROMEO}'/><item jid='nurse@example.net'/>")
    assert (reply["type"], condition(reply)) == ("error", "bad-request")
    assert stores[IRosterStore].get_items(ALICE).result == []


def test_roster_set_without_an_item_is_bad_request(world):
    home = login(world, f"{ALICE}/home")
    assert condition(roster_set(world, home, "")) == "bad-request"


def test_roster_item_without_a_jid_is_bad_request(world):
    home = login(world, f"{ALICE}/home")
    assert condition(roster_set(world, home, "<item name='x'/>")) == "bad-request"


def test_roster_item_with_a_malformed_jid_is_jid_malformed(world):
    home = login(world, f"{ALICE}/home")
    assert condition(roster_set(world, home, "<item jid='a@b@c'/>")) == "jid-malformed"


def test_roster_item_with_a_full_jid_is_bad_request(world):
    home = login(world, f"{ALICE}/home")
    assert condition(roster_set(world, home, f"<item jid='{ROMEO}/orchard'/>")) == "bad-request"


def test_roster_item_with_duplicate_groups_is_bad_request(world):
    home = login(world, f"{ALICE}/home")
    reply = roster_set(world, home, f"<item jid='{ROMEO}'><group>A</group><group>A</group></item>")
    assert condition(reply) == "bad-request"


def test_roster_item_with_an_empty_group_is_bad_request(world):
    home = login(world, f"{ALICE}/home")
    assert condition(roster_set(world, home, f"<item jid='{ROMEO}'><group/></item>")) == "bad-request"


def test_roster_item_for_the_users_own_jid_is_not_allowed(world):
    home = login(world, f"{ALICE}/home")
    assert condition(roster_set(world, home, f"<item jid='{ALICE}'/>")) == "not-allowed"


def test_roster_name_at_the_limit_is_accepted_and_past_it_not_acceptable(world):
    home = login(world, f"{ALICE}/home")
    assert roster_set(world, home, f"<item jid='{ROMEO}' name='{'n' * 10}'/>")["type"] == "result"
    assert condition(roster_set(world, home, f"<item jid='{ROMEO}' name='{'n' * 11}'/>")) == "not-acceptable"


def test_roster_group_count_at_the_limit_is_accepted_and_past_it_not_acceptable(world):
    home = login(world, f"{ALICE}/home")
    two = "<group>a</group><group>b</group>"
    assert roster_set(world, home, f"<item jid='{ROMEO}'>{two}</item>")["type"] == "result"
    reply = roster_set(world, home, f"<item jid='{ROMEO}'>{two}<group>c</group></item>")
    assert condition(reply) == "not-acceptable"


def test_roster_group_name_at_the_limit_is_accepted_and_past_it_not_acceptable(world):
    home = login(world, f"{ALICE}/home")
    assert roster_set(world, home, f"<item jid='{ROMEO}'><group>{'g' * 8}</group></item>")["type"] == "result"
    reply = roster_set(world, home, f"<item jid='{ROMEO}'><group>{'g' * 9}</group></item>")
    assert condition(reply) == "not-acceptable"


def test_roster_size_at_the_limit_is_accepted_and_past_it_a_policy_violation(world, stores):
    put(stores, ALICE, RosterItem("stranger@example.net", pending_in=True, in_roster=False))
    home = login(world, f"{ALICE}/home")
    for n in range(5):
        assert roster_set(world, home, f"<item jid='c{n}@example.net'/>", iq_id=f"s{n}")["type"] == "result"
    assert condition(roster_set(world, home, "<item jid='c5@example.net'/>")) == "policy-violation"
    # updating an existing item is still fine
    assert roster_set(world, home, "<item jid='c0@example.net' name='zero'/>")["type"] == "result"


def test_roster_set_to_someone_elses_bare_jid_is_forbidden(world, stores):
    home = login(world, f"{ALICE}/home")
    login(world, "bob@example.org/desk")
    reply = iq(world, home, "set", f"<query xmlns='jabber:iq:roster'><item jid='{ROMEO}'/></query>",
               to="bob@example.org")
    assert condition(reply) == "forbidden"
    assert row(stores, "bob@example.org", ROMEO) is None


def test_roster_get_of_someone_elses_roster_is_forbidden(world):
    home = login(world, f"{ALICE}/home")
    bob = login(world, "bob@example.org/desk")
    for to in ("bob@example.org", "bob@example.org/desk"):
        reply = iq(world, home, "get", "<query xmlns='jabber:iq:roster'/>", iq_id=to, to=to)
        assert condition(reply) == "forbidden"
    assert bob.sent == []


def test_account_removal_cancels_subscriptions_and_deletes_the_roster(world, stores):
    put(stores, ALICE, RosterItem(ROMEO, subscription="both"))
    put(stores, ALICE, RosterItem("nurse@example.net", pending_in=True, in_roster=False))
    world.router.routed.clear()
    world.sm.hooks.notify(AccountRemoved, AccountEvent(ALICE))
    assert summary(world.router.routed) == [
        ("unsubscribe", ALICE, ROMEO), ("unsubscribed", ALICE, "nurse@example.net"),
        ("unsubscribed", ALICE, ROMEO)]
    assert stores[IRosterStore].get_items(ALICE).result == []


def test_roster_removal_between_local_users_updates_the_contacts_roster(world, stores):
    put(stores, ALICE, RosterItem("bob@example.org", subscription="both"))
    put(stores, "bob@example.org", RosterItem(ALICE, subscription="both"))
    alice = login(world, f"{ALICE}/home")
    bob = login(world, "bob@example.org/desk")
    alice.take()
    roster_set(world, alice, "<item jid='bob@example.org' subscription='remove'/>")
    assert row(stores, "bob@example.org", ALICE) == RosterItem(ALICE, subscription="none")
    assert pushes(bob)[-1] == {"jid": ALICE, "subscription": "none", "groups": []}
    got = summary(presences(bob))
    assert ("unavailable", f"{ALICE}/home", "bob@example.org") in got
    assert ("unsubscribe", ALICE, "bob@example.org") in got
    assert ("unsubscribed", ALICE, "bob@example.org") in got


@pytest.mark.parametrize("option", ["max_items", "max_name_length", "max_groups", "max_group_length"])
def test_roster_config_limits_must_be_positive(option):
    assert section_from_dict(RosterConfig, {option: 1}, ("extensions", "roster"))
    with pytest.raises(ConfigError) as e:
        section_from_dict(RosterConfig, {option: 0}, ("extensions", "roster"))
    assert e.value.path == ("extensions", "roster", option)
