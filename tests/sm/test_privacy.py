"""Privacy lists (XEP-0016) through the SM: management, conflicts, pushes and enforcement."""

from __future__ import annotations

import pytest

from tests.support.presence_kit import iq, login, make_stores, make_world, presences, put, summary
from tests.support.sm_harness import condition
from tigasepy.extensions.message import MessageDelivery
from tigasepy.extensions.privacy import Privacy, PrivacyConfig
from tigasepy.extensions.privacy_rules import BLOCKING, PRIVACY
from tigasepy.storage.interfaces import IPrivacyStore, PrivacyItem, RosterItem
from tigasepy.storage.memory import MemoryPrivacyStore

ALICE = "alice@example.org"
BOB = "bob@example.org"
CAROL = "carol@example.org"


@pytest.fixture
def stores():
    found = make_stores()
    found[IPrivacyStore] = MemoryPrivacyStore()
    return found


@pytest.fixture
def world(stores):
    return make_world(stores, extra=((Privacy, PrivacyConfig(max_lists=3, max_items=4)),
                                     (MessageDelivery, None)))


def privacy(world, session, kind, body, iq_id="p1"):
    return iq(world, session, kind, f"<query xmlns='{PRIVACY}'>{body}</query>", iq_id)


def put_list(world, session, name, *items, iq_id="l1"):
    return privacy(world, session, "set", f"<list name='{name}'>{''.join(items)}</list>", iq_id)


def privacy_pushes(session):
    found = [s for s in session.sent if s.name == "iq" and s.getAttribute("type") == "set"
             and next(s.elements(PRIVACY, "query"), None) is not None]
    for s in found:
        session.sent.remove(s)
    return [next(next(s.elements(PRIVACY, "query")).elements(PRIVACY, "list"))["name"] for s in found]


def chat(world, sender, to, text="hi", iq_id="m"):
    world.send(sender, f"<message to='{to}' type='chat' id='{iq_id}'><body>{text}</body></message>")


def messages(session):
    found = [s for s in session.sent if s.name == "message" and s.getAttribute("type") != "error"]
    for s in found:
        session.sent.remove(s)
    return [str(next(m.elements(None, "body"))) for m in found]


DENY_BOB = f"<item type='jid' value='{BOB}' action='deny' order='1'/>"


def test_lists_are_listed_with_active_and_default_and_read_one_at_a_time(world):
    alice = login(world, f"{ALICE}/a")
    assert put_list(world, alice, "public", DENY_BOB, "<item action='allow' order='2'/>")["type"] == "result"
    put_list(world, alice, "private", "<item type='subscription' value='both' action='allow' order='10'/>"
             "<item action='deny' order='15'><message/><iq/></item>", iq_id="l2")
    privacy(world, alice, "set", "<active name='private'/>", "a1")
    privacy(world, alice, "set", "<default name='public'/>", "d1")
    reply = privacy(world, alice, "get", "")
    query = next(reply.elements(PRIVACY, "query"))
    assert [(c.name, c["name"]) for c in query.elements()] == [
        ("active", "private"), ("default", "public"), ("list", "private"), ("list", "public")]
    reply = privacy(world, alice, "get", "<list name='private'/>", "g2")
    items = list(next(next(reply.elements(PRIVACY, "query")).elements(PRIVACY, "list")).elements())
    assert [(i.getAttribute("type"), i.getAttribute("value"), i["action"], i["order"],
             sorted(c.name for c in i.elements())) for i in items] == [
        ("subscription", "both", "allow", "10", []), (None, None, "deny", "15", ["iq", "message"])]


@pytest.mark.parametrize("body,expected", [
    ("<list name='nope'/>", "item-not-found"),
    ("<list name='a'/><list name='b'/>", "bad-request"),
])
def test_bad_list_reads(world, body, expected):
    alice = login(world, f"{ALICE}/a")
    put_list(world, alice, "a", DENY_BOB)
    assert condition(privacy(world, alice, "get", body, "g")) == expected


@pytest.mark.parametrize("items,expected", [
    ("<item action='deny' order='1'/><item action='allow' order='1'/>", "bad-request"),
    ("<item action='block' order='1'/>", "bad-request"),
    ("<item action='deny'/>", "bad-request"),
    ("<item action='deny' order='-1'/>", "bad-request"),
    ("<item action='deny' order='4294967296'/>", "bad-request"),
    ("<item type='colour' value='red' action='deny' order='1'/>", "bad-request"),
    ("<item type='jid' action='deny' order='1'/>", "bad-request"),
    ("<item type='subscription' value='maybe' action='deny' order='1'/>", "bad-request"),
    ("<item action='deny' order='1'><chat/></item>", "bad-request"),
    ("<item type='group' value='Nobody' action='deny' order='1'/>", "item-not-found"),
    ("".join(f"<item action='deny' order='{n}'/>" for n in range(5)), "policy-violation"),
])
def test_invalid_lists_are_refused_and_change_nothing(world, stores, items, expected):
    alice = login(world, f"{ALICE}/a")
    assert condition(put_list(world, alice, "bad", items)) == expected
    assert stores[IPrivacyStore].get_all(ALICE).result.lists == {}


def test_list_count_is_limited(world):
    alice = login(world, f"{ALICE}/a")
    for n in range(3):
        assert put_list(world, alice, f"l{n}", DENY_BOB, iq_id=f"l{n}")["type"] == "result"
    assert condition(put_list(world, alice, "l3", DENY_BOB, iq_id="l4")) == "policy-violation"
    assert put_list(world, alice, "l0", DENY_BOB, iq_id="l5")["type"] == "result"   # replacing is fine


def test_a_set_needs_exactly_one_element(world):
    alice = login(world, f"{ALICE}/a")
    assert condition(privacy(world, alice, "set", "<active/><default/>")) == "bad-request"
    assert condition(privacy(world, alice, "set", "")) == "bad-request"
    assert condition(privacy(world, alice, "set", "<active name='nope'/>", "p2")) == "item-not-found"
    assert condition(privacy(world, alice, "set", "<default name='nope'/>", "p3")) == "item-not-found"
    assert condition(privacy(world, alice, "set", "<list name='nope'/>", "p4")) == "item-not-found"


def test_the_default_list_applies_to_every_resource_and_offline(world):
    alice1, alice2 = login(world, f"{ALICE}/1"), login(world, f"{ALICE}/2")
    bob, carol = login(world, f"{BOB}/b"), login(world, f"{CAROL}/c")
    put_list(world, alice1, "public", DENY_BOB)
    privacy(world, alice1, "set", "<default name='public'/>", "d1")
    chat(world, bob, ALICE)
    chat(world, bob, f"{ALICE}/2")
    chat(world, carol, ALICE, "from carol")
    assert messages(alice1) + messages(alice2) == ["from carol", "from carol"]
    assert [condition(s) for s in bob.take() if s.name == "message"] == ["service-unavailable"] * 2


def test_an_active_list_applies_to_its_session_only_and_replaces_the_default(world):
    alice1, alice2 = login(world, f"{ALICE}/1"), login(world, f"{ALICE}/2")
    bob = login(world, f"{BOB}/b")
    put_list(world, alice1, "public", DENY_BOB)
    put_list(world, alice1, "open", "<item action='allow' order='1'/>", iq_id="l2")
    privacy(world, alice1, "set", "<default name='public'/>", "d1")
    privacy(world, alice2, "set", "<active name='open'/>", "a1")
    chat(world, bob, f"{ALICE}/1", "to 1")
    chat(world, bob, f"{ALICE}/2", "to 2")
    assert (messages(alice1), messages(alice2)) == ([], ["to 2"])
    chat(world, bob, ALICE, "to bare")   # one bound session's list allows it: it passes
    assert messages(alice2) == ["to bare"]
    alice1.take()
    privacy(world, alice2, "set", "<active/>", "a2")
    chat(world, bob, f"{ALICE}/2", "again")
    assert messages(alice2) == []


def test_kinds_limit_what_an_item_blocks(world, stores):
    put(stores, ALICE, RosterItem(BOB, subscription="both"))
    put(stores, BOB, RosterItem(ALICE, subscription="both"))
    alice = login(world, f"{ALICE}/a")
    bob = login(world, f"{BOB}/b")
    put_list(world, alice, "quiet", f"<item type='jid' value='{BOB}' action='deny' order='1'><message/></item>")
    privacy(world, alice, "set", "<active name='quiet'/>", "a1")
    alice.take()
    chat(world, bob, ALICE, "dropped")
    world.send(bob, "<presence><show>dnd</show></presence>")
    assert messages(alice) == []
    assert summary(presences(alice)) == [("available", f"{BOB}/b", ALICE)]
    chat(world, alice, BOB, "outbound messages pass")
    assert messages(bob) == ["outbound messages pass"]


def test_presence_in_blocks_notifications_but_not_subscriptions(world, stores):
    alice = login(world, f"{ALICE}/a")
    put_list(world, alice, "pin", "<item action='deny' order='1'><presence-in/></item>")
    privacy(world, alice, "set", "<active name='pin'/>", "a1")
    bob = login(world, f"{BOB}/b")
    alice.take()
    world.send(bob, f"<presence to='{ALICE}/a'/>")
    world.send(bob, f"<presence to='{ALICE}' type='subscribe'/>")
    assert summary(presences(alice)) == [("subscribe", BOB, ALICE)]


def test_presence_out_hides_the_broadcast_and_withdraws_presence(world, stores):
    for contact in (BOB, CAROL):
        put(stores, ALICE, RosterItem(contact, subscription="both"))
        put(stores, contact, RosterItem(ALICE, subscription="both"))
    bob, carol = login(world, f"{BOB}/b"), login(world, f"{CAROL}/c")
    alice = login(world, f"{ALICE}/a")
    bob.take(), carol.take()
    put_list(world, alice, "hide", f"<item type='jid' value='{BOB}' action='deny' order='1'><presence-out/></item>")
    privacy(world, alice, "set", "<active name='hide'/>", "a1")
    assert summary(presences(bob)) == [("unavailable", f"{ALICE}/a", BOB)]
    world.send(alice, "<presence><show>chat</show></presence>")
    assert presences(bob) == []
    assert summary(presences(carol)) == [("available", f"{ALICE}/a", CAROL)]
    privacy(world, alice, "set", "<active/>", "a2")
    assert summary(presences(bob)) == [("available", f"{ALICE}/a", BOB)]


def test_subscription_and_group_items_follow_the_roster(world, stores):
    put(stores, ALICE, RosterItem(BOB, subscription="both", groups=("Work",)))
    alice = login(world, f"{ALICE}/a")
    bob, carol = login(world, f"{BOB}/b"), login(world, f"{CAROL}/c")
    put_list(world, alice, "strangers", "<item type='subscription' value='none' action='deny' order='1'/>")
    privacy(world, alice, "set", "<active name='strangers'/>", "a1")
    chat(world, bob, ALICE, "friend")
    chat(world, carol, ALICE, "stranger")
    assert messages(alice) == ["friend"]
    put_list(world, alice, "nowork", "<item type='group' value='Work' action='deny' order='1'><message/></item>",
             iq_id="l2")
    privacy(world, alice, "set", "<active name='nowork'/>", "a2")
    chat(world, bob, ALICE, "work")
    chat(world, carol, ALICE, "stranger again")
    assert messages(alice) == ["stranger again"]
    put(stores, ALICE, RosterItem(BOB, subscription="both", groups=("Friends",)))   # the roster changes
    chat(world, bob, ALICE, "now a friend")
    assert messages(alice) == ["now a friend"]


def test_fall_through_deny_blocks_everyone_but_own_resources(world):
    alice1, alice2 = login(world, f"{ALICE}/1"), login(world, f"{ALICE}/2")
    bob = login(world, f"{BOB}/b")
    put_list(world, alice1, "nobody", "<item action='deny' order='1'/>")
    privacy(world, alice1, "set", "<default name='nobody'/>", "d1")
    chat(world, bob, ALICE, "x")
    chat(world, alice1, f"{ALICE}/2", "self")
    assert messages(alice2) == ["self"]
    chat(world, alice1, BOB, "out", iq_id="o1")
    [error] = [s for s in alice1.take() if s.name == "message"]
    assert condition(error) == "not-acceptable"
    assert [c.name for c in next(error.elements(None, "error")).elements()] == ["not-acceptable"]


def test_removing_or_replacing_a_list_in_use_elsewhere_is_a_conflict(world, stores):
    alice1, alice2 = login(world, f"{ALICE}/1"), login(world, f"{ALICE}/2")
    put_list(world, alice1, "mine", DENY_BOB)
    put_list(world, alice1, "other", DENY_BOB, iq_id="l2")
    privacy(world, alice2, "set", "<active name='mine'/>", "a1")
    assert condition(privacy(world, alice1, "set", "<list name='mine'/>", "r1")) == "conflict"
    privacy(world, alice1, "set", "<default name='other'/>", "d1")   # no default yet: no conflict
    assert condition(privacy(world, alice2, "set", "<default/>", "d2")) == "conflict"   # alice1 uses it
    assert condition(privacy(world, alice2, "set", "<list name='other'/>", "r2")) == "conflict"
    privacy(world, alice1, "set", "<active name='other'/>", "a2")
    assert privacy(world, alice2, "set", "<default/>", "d3")["type"] == "result"
    assert privacy(world, alice2, "set", "<list name='mine'/>", "r3")["type"] == "result"
    assert sorted(stores[IPrivacyStore].get_all(ALICE).result.lists) == ["other"]
    assert world.sm.session(f"{ALICE}/2").data.get("privacy.active") is None


def test_privacy_pushes_go_to_resources_that_used_privacy_lists(world):
    alice1, alice2, alice3 = (login(world, f"{ALICE}/{n}") for n in (1, 2, 3))
    privacy(world, alice2, "get", "")
    put_list(world, alice1, "mine", DENY_BOB)
    assert (privacy_pushes(alice1), privacy_pushes(alice2), privacy_pushes(alice3)) == (["mine"], ["mine"], [])


def test_editing_the_default_list_updates_the_blocklist_and_pushes_it(world):
    alice = login(world, f"{ALICE}/a")
    reader = login(world, f"{ALICE}/reader")
    iq(world, reader, "get", f"<blocklist xmlns='{BLOCKING}'/>", "bl")
    iq(world, alice, "set", f"<block xmlns='{BLOCKING}'><item jid='{CAROL}'/></block>", "b1")
    reader.take()
    put_list(world, alice, "blocklist", DENY_BOB, "<item action='allow' order='5'/>")
    blocks = [c for s in reader.take() for c in s.elements() if c.uri == BLOCKING]
    assert [(b.name, [i["jid"] for i in b.elements()]) for b in blocks] == [
        ("block", [BOB]), ("unblock", [CAROL])]
    put_list(world, alice, "other", f"<item type='jid' value='{CAROL}' action='deny' order='1'/>", iq_id="l2")
    assert condition(privacy(world, alice, "set", "<default name='other'/>", "d1")) == "conflict"
    world.disconnect(reader)
    assert privacy(world, alice, "set", "<default name='other'/>", "d2")["type"] == "result"
    reply = iq(world, alice, "get", f"<blocklist xmlns='{BLOCKING}'/>", "bl2")
    assert [i["jid"] for i in reply.firstChildElement().elements()] == [CAROL]


def test_blocking_keeps_the_privacy_items_of_the_default_list(world, stores):
    alice = login(world, f"{ALICE}/a")
    put_list(world, alice, "public", "<item type='jid' value='x@example.com' action='allow' order='0'/>",
             "<item action='deny' order='3'><iq/></item>")
    privacy(world, alice, "set", "<default name='public'/>", "d1")
    iq(world, alice, "set", f"<block xmlns='{BLOCKING}'><item jid='{BOB}'/><item jid='{CAROL}'/></block>", "b1")
    items = stores[IPrivacyStore].get_all(ALICE).result.lists["public"]
    assert [(i.order, i.value) for i in items] == [(0, BOB), (1, CAROL), (2, "x@example.com"), (3, None)]
    iq(world, alice, "set", f"<unblock xmlns='{BLOCKING}'/>", "u1")
    items = stores[IPrivacyStore].get_all(ALICE).result.lists["public"]
    assert items == (PrivacyItem(order=2, action="allow", type="jid", value="x@example.com"),
                     PrivacyItem(order=3, action="deny", kinds=frozenset({"iq"})))


def test_limits_at_and_past_the_edge(stores):
    world = make_world(stores, extra=((Privacy, PrivacyConfig(max_items=2, max_name_length=5)),))
    alice = login(world, f"{ALICE}/a")
    two = "<item action='deny' order='1'><iq/></item><item action='allow' order='2'/>"
    assert put_list(world, alice, "fives", two)["type"] == "result"
    assert condition(put_list(world, alice, "sixsix", two, iq_id="l2")) == "bad-request"
    assert condition(put_list(world, alice, "x", two + "<item action='deny' order='3'/>", iq_id="l3")) \
        == "policy-violation"
    block = f"<block xmlns='{BLOCKING}'><item jid='{BOB}'/><item jid='{CAROL}'/></block>"
    assert iq(world, alice, "set", block, "b1")["type"] == "result"
    more = f"<block xmlns='{BLOCKING}'><item jid='dave@example.org'/></block>"
    assert condition(iq(world, alice, "set", more, "b2")) == "policy-violation"


def test_evicted_accounts_are_enforced_from_storage(stores):
    world = make_world(stores, extra=((Privacy, PrivacyConfig(cache_size=1)), (MessageDelivery, None)))
    alice, bob = login(world, f"{ALICE}/a"), login(world, f"{BOB}/b")
    carol = login(world, f"{CAROL}/c")
    iq(world, alice, "set", f"<block xmlns='{BLOCKING}'><item jid='{CAROL}'/></block>", "b1")
    iq(world, bob, "set", f"<block xmlns='{BLOCKING}'><item jid='{CAROL}'/></block>", "b2")
    assert len(world.sm.extensions["privacy"][0]._cache) == 1
    chat(world, carol, ALICE, "1")
    chat(world, carol, BOB, "2")
    assert messages(alice) == [] and messages(bob) == []
    assert [condition(s) for s in carol.take() if s.name == "message"] == ["service-unavailable"] * 2
