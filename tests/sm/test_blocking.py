"""The blocking command (XEP-0191) through the SM: blocklist, pushes and server-side enforcement."""

from __future__ import annotations

import pytest
from zope.interface.verify import verifyObject

from tests.support.presence_kit import iq, login, make_stores, make_world, presences, put, summary
from tests.support.sm_harness import condition, parse_xml
from tigasepy.config import ConfigError, section_from_dict
from tigasepy.extensions.message import MessageDelivery
from tigasepy.extensions.offline import OfflineConfig, OfflineMessages
from tigasepy.extensions.ping import Ping
from tigasepy.extensions.privacy import Privacy, PrivacyConfig
from tigasepy.extensions.privacy_rules import BLOCKING, BLOCKING_ERRORS, PRIVACY
from tigasepy.interfaces import IExtension
from tigasepy.storage.interfaces import IOfflineStore, IPrivacyStore, PrivacyItem, RosterItem
from tigasepy.storage.memory import MemoryPrivacyStore
from tigasepy.xmpp.stanza import copy_element

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
    return make_world(stores, extra=((Privacy, PrivacyConfig()), (MessageDelivery, None), (Ping, None),
                                     (OfflineMessages, OfflineConfig())))


def mutual(stores, a, b):
    put(stores, a, RosterItem(b, subscription="both"))
    put(stores, b, RosterItem(a, subscription="both"))


def block(world, session, *jids, iq_id="b1"):
    items = "".join(f"<item jid='{j}'/>" for j in jids)
    return iq(world, session, "set", f"<block xmlns='{BLOCKING}'>{items}</block>", iq_id)


def unblock(world, session, *jids, iq_id="u1"):
    items = "".join(f"<item jid='{j}'/>" for j in jids)
    return iq(world, session, "set", f"<unblock xmlns='{BLOCKING}'>{items}</unblock>", iq_id)


def blocklist(world, session):
    reply = iq(world, session, "get", f"<blocklist xmlns='{BLOCKING}'/>", "bl")
    assert reply["type"] == "result"
    return [i["jid"] for i in next(reply.elements(BLOCKING, "blocklist")).elements(BLOCKING, "item")]


def blocking_pushes(session):
    found = [s for s in session.sent if s.name == "iq" and s.getAttribute("type") == "set"
             and _child(s, BLOCKING) is not None]
    for s in found:
        session.sent.remove(s)
    out = []
    for s in found:
        payload = _child(s, BLOCKING)
        out.append((payload.name, [i["jid"] for i in payload.elements(BLOCKING, "item")]))
    return out


def _child(stanza, uri):
    return next((c for c in stanza.elements() if c.uri == uri), None)


def send(world, session, xml):
    world.send(session, xml)


def test_extension_provides_the_interface(world):
    extension = world.sm.extensions["privacy"][0]
    assert verifyObject(IExtension, extension)


def test_features_are_advertised_as_configured(stores):
    world = make_world(stores, extra=((Privacy, PrivacyConfig(privacy_lists=False)),))
    features = world.sm.disco.features()
    assert BLOCKING in features and PRIVACY not in features


def test_config_needs_a_protocol_and_positive_limits():
    with pytest.raises(ConfigError):
        section_from_dict(PrivacyConfig, {"blocking": False, "privacy_lists": False}, ("extensions", "privacy"))
    with pytest.raises(ConfigError):
        section_from_dict(PrivacyConfig, {"max_items": 0}, ("extensions", "privacy"))


def test_blocklist_starts_empty_and_lists_blocked_jids_in_order(world):
    alice = login(world, f"{ALICE}/a")
    assert blocklist(world, alice) == []
    assert block(world, alice, "Eve@Example.COM", "evil.example")["type"] == "result"
    assert block(world, alice, "bob@example.org/phone")["type"] == "result"
    assert blocklist(world, alice) == ["bob@example.org/phone", "eve@example.com", "evil.example"]


def test_block_pushes_go_to_resources_that_asked_for_the_blocklist(world):
    asked = login(world, f"{ALICE}/asked")
    other = login(world, f"{ALICE}/other")
    blocklist(world, asked)
    block(world, other, "eve@example.com")
    assert blocking_pushes(asked) == [("block", ["eve@example.com"])]
    assert blocking_pushes(other) == []
    unblock(world, other, "eve@example.com")
    assert blocking_pushes(asked) == [("unblock", ["eve@example.com"])]
    block(world, other, "eve@example.com", iq_id="b2")
    unblock(world, other, iq_id="u2")
    assert blocking_pushes(asked) == [("block", ["eve@example.com"]), ("unblock", [])]


@pytest.mark.parametrize("payload,expected", [
    (f"<block xmlns='{BLOCKING}'/>", "bad-request"),
    (f"<block xmlns='{BLOCKING}'><item/></block>", "bad-request"),
    (f"<block xmlns='{BLOCKING}'><item jid=''/></block>", "bad-request"),
    (f"<unblock xmlns='{BLOCKING}'><item/></unblock>", "bad-request"),
    (f"<block xmlns='{BLOCKING}'><item jid='@bad@'/></block>", "jid-malformed"),
])
def test_malformed_block_requests_change_nothing(world, payload, expected):
    alice = login(world, f"{ALICE}/a")
    reply = iq(world, alice, "set", payload)
    assert condition(reply) == expected
    assert blocklist(world, alice) == []


def test_another_accounts_blocklist_is_forbidden(world):
    alice = login(world, f"{ALICE}/a")
    reply = iq(world, alice, "get", f"<blocklist xmlns='{BLOCKING}'/>", to=BOB)
    assert condition(reply) == "forbidden"


def test_messages_from_a_blocked_jid_reach_no_resource_and_bounce(world, stores):
    alice1, alice2 = login(world, f"{ALICE}/1"), login(world, f"{ALICE}/2")
    bob = login(world, f"{BOB}/b")
    block(world, alice1, BOB)
    send(world, bob, f"<message to='{ALICE}' type='chat' id='m1'><body>hi</body></message>")
    send(world, bob, f"<message to='{ALICE}/2' type='chat' id='m2'><body>hi</body></message>")
    assert [s for s in alice1.sent + alice2.sent if s.name == "message"] == []
    errors = [s for s in bob.take() if s.name == "message"]
    assert [(e["id"], e["type"], condition(e)) for e in errors] == [
        ("m1", "error", "service-unavailable"), ("m2", "error", "service-unavailable")]


def test_a_blocked_jids_message_is_not_stored_offline(world, stores):
    alice = login(world, f"{ALICE}/a")
    block(world, alice, BOB)
    world.disconnect(alice)
    bob = login(world, f"{BOB}/b")
    send(world, bob, f"<message to='{ALICE}' type='chat' id='m1'><body>hi</body></message>")
    assert stores[IOfflineStore].count(ALICE).result == 0
    assert condition(bob.take()[-1]) == "service-unavailable"


def test_presence_from_a_blocked_jid_is_dropped_silently(world, stores):
    mutual(stores, ALICE, BOB)
    alice = login(world, f"{ALICE}/a")
    block(world, alice, BOB)
    alice.take()
    bob = login(world, f"{BOB}/b")   # initial presence: broadcast and probe
    send(world, bob, f"<presence to='{ALICE}' type='subscribe'/>")
    send(world, bob, f"<presence to='{ALICE}/a'/>")
    assert presences(alice) == []
    assert [s for s in bob.take() if s.name == "presence" and s.getAttribute("from", "").startswith(ALICE)] == []


def test_iq_from_a_blocked_jid_gets_service_unavailable_and_results_are_dropped(world):
    alice = login(world, f"{ALICE}/a")
    block(world, alice, BOB)
    alice.take()
    bob = login(world, f"{BOB}/b")
    send(world, bob, f"<iq type='get' id='v1' to='{ALICE}/a'><query xmlns='jabber:iq:version'/></iq>")
    send(world, bob, f"<iq type='get' id='v2' to='{ALICE}'><ping xmlns='urn:xmpp:ping'/></iq>")
    send(world, bob, f"<iq type='result' id='v3' to='{ALICE}/a'/>")
    assert alice.sent == []
    replies = bob.take()
    assert [(r["id"], condition(r)) for r in replies] == [("v1", "service-unavailable"),
                                                          ("v2", "service-unavailable")]


def test_remote_senders_are_blocked_by_domain(world):
    alice = login(world, f"{ALICE}/a")
    block(world, alice, "evil.example")
    alice.take()
    world.sm.deliver(copy_element(parse_xml(
        f"<message from='mallory@evil.example/x' to='{ALICE}' type='chat'><body>hi</body></message>")))
    world.sm.deliver(copy_element(parse_xml(
        f"<message from='friend@good.example/x' to='{ALICE}' type='chat'><body>hi</body></message>")))
    assert [m["from"] for m in alice.sent] == ["friend@good.example/x"]
    [bounce] = world.router.routed
    assert (bounce["to"], condition(bounce)) == ("mallory@evil.example/x", "service-unavailable")


def test_a_full_jid_block_matches_only_that_resource(world):
    alice = login(world, f"{ALICE}/a")
    block(world, alice, f"{BOB}/phone")
    phone, laptop = login(world, f"{BOB}/phone"), login(world, f"{BOB}/laptop")
    send(world, phone, f"<message to='{ALICE}' type='chat'><body>1</body></message>")
    send(world, laptop, f"<message to='{ALICE}' type='chat'><body>2</body></message>")
    assert [str(next(m.elements(None, "body"))) for m in alice.sent if m.name == "message"] == ["2"]


def test_outbound_stanzas_to_a_blocked_jid_get_not_acceptable_with_blocked(world):
    alice = login(world, f"{ALICE}/a")
    bob = login(world, f"{BOB}/b")
    block(world, alice, BOB)
    alice.take()
    send(world, alice, f"<message to='{BOB}' type='chat' id='m1'><body>hi</body></message>")
    send(world, alice, f"<iq type='get' id='q1' to='{BOB}/b'><ping xmlns='urn:xmpp:ping'/></iq>")
    send(world, alice, f"<presence to='{BOB}/b' id='p1'/>")
    replies = alice.take()
    assert [(r.name, r["id"], condition(r)) for r in replies] == [
        ("message", "m1", "not-acceptable"), ("iq", "q1", "not-acceptable"), ("presence", "p1", "not-acceptable")]
    for reply in replies:
        error = next(reply.elements(None, "error"))
        assert error["type"] == "cancel"
        assert next(error.elements(BLOCKING_ERRORS, "blocked"), None) is not None
    assert [s for s in bob.sent if s.name != "presence" or s.getAttribute("from", "").startswith(ALICE)] == []


def test_blocking_withdraws_presence_and_broadcasts_skip_the_blocked_contact(world, stores):
    mutual(stores, ALICE, BOB)
    mutual(stores, ALICE, CAROL)
    bob, carol = login(world, f"{BOB}/b"), login(world, f"{CAROL}/c")
    alice1, _alice2 = login(world, f"{ALICE}/1"), login(world, f"{ALICE}/2")
    bob.take(), carol.take()
    block(world, alice1, BOB)
    assert summary(presences(bob)) == [("unavailable", f"{ALICE}/1", BOB), ("unavailable", f"{ALICE}/2", BOB)]
    send(world, alice1, "<presence><show>away</show></presence>")
    assert presences(bob) == []
    assert summary(presences(carol)) == [("available", f"{ALICE}/1", CAROL)]
    # a probe from the blocked contact gets nothing back
    world.sm.route(copy_element(parse_xml(f"<presence type='probe' from='{BOB}/b' to='{ALICE}'/>")))
    assert presences(bob) == []


def test_unblocking_restores_delivery_and_sends_current_presence(world, stores):
    mutual(stores, ALICE, BOB)
    bob = login(world, f"{BOB}/b")
    alice = login(world, f"{ALICE}/a")
    block(world, alice, BOB)
    bob.take()
    alice.take()
    unblock(world, alice, BOB)
    assert summary(presences(bob)) == [("available", f"{ALICE}/a", BOB)]
    assert summary(presences(alice)) == [("available", f"{BOB}/b", f"{ALICE}/a")]   # probe answered
    send(world, bob, f"<message to='{ALICE}' type='chat'><body>back</body></message>")
    assert [m.name for m in alice.sent] == ["message"]


def test_unblock_all_empties_the_blocklist(world, stores):
    alice = login(world, f"{ALICE}/a")
    block(world, alice, BOB, CAROL)
    unblock(world, alice)
    assert blocklist(world, alice) == []
    assert stores[IPrivacyStore].get_all(ALICE).result.lists == {}


def test_blocklist_is_the_default_privacy_list(world, stores):
    alice = login(world, f"{ALICE}/a")
    block(world, alice, BOB)
    settings = stores[IPrivacyStore].get_all(ALICE).result
    assert settings.default == "blocklist"
    assert settings.lists["blocklist"] == (PrivacyItem(order=0, action="deny", type="jid", value=BOB),)


def test_blocks_survive_a_restart_of_the_extension(world, stores):
    alice = login(world, f"{ALICE}/a")
    block(world, alice, BOB)
    world.sm.unload_extension("privacy")
    world.sm.load_extension(Privacy, PrivacyConfig())
    bob = login(world, f"{BOB}/b")
    send(world, bob, f"<message to='{ALICE}' type='chat' id='m1'><body>hi</body></message>")
    assert condition(bob.take()[-1]) == "service-unavailable"


def test_own_resources_are_never_blocked(world):
    one, two = login(world, f"{ALICE}/1"), login(world, f"{ALICE}/2")
    block(world, one, ALICE, "example.org")
    send(world, one, f"<message to='{ALICE}/2' type='chat'><body>me</body></message>")
    assert [m.name for m in two.sent] == ["message"]
