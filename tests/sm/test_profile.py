"""vcard-temp (XEP-0054) with avatar hashes (XEP-0153), private storage (XEP-0049), last activity
(XEP-0012), entity time (XEP-0202) and contact addresses (XEP-0157) over the SM harness."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from zope.interface.verify import verifyObject

from tests.support.presence_kit import iq, login, make_stores, make_world, put
from tests.support.sm_harness import condition
from tigasepy.config import ConfigError, section_from_dict
from tigasepy.extensions import BUILTIN, load_class
from tigasepy.extensions.contact_addresses import SERVERINFO, ContactAddresses, ContactAddressesConfig
from tigasepy.extensions.disco import ServiceDiscovery
from tigasepy.extensions.entity_time import EntityTime, tzo
from tigasepy.extensions.last import LastActivityExtension
from tigasepy.extensions.private import PrivateConfig, PrivateStorage
from tigasepy.extensions.vcard import VCardConfig, VCardTemp
from tigasepy.interfaces import IExtension
from tigasepy.sm.events import AccountEvent, AccountRemoved
from tigasepy.storage.interfaces import (
    IAccountStore, ILastActivityStore, IPrivateStore, IVCardStore, LastActivity, RosterItem,
)
from tigasepy.storage.memory import MemoryLastActivityStore, MemoryPrivateStore, MemoryVCardStore
from tigasepy.xmpp import namespaces as ns

ALICE = "alice@example.org"
BOB = "bob@example.org"
CAROL = "carol@example.org"
PHOTO = b"\x89PNG not really an image"
PHOTO_SHA1 = hashlib.sha1(PHOTO).hexdigest()
VCARD_WITH_PHOTO = (f"<vCard xmlns='vcard-temp'><FN>Alice</FN><PHOTO><TYPE>image/png</TYPE>"
                    f"<BINVAL>{base64.b64encode(PHOTO).decode()}</BINVAL></PHOTO></vCard>")


@pytest.fixture
def stores():
    stores = make_stores()
    stores.update({IVCardStore: MemoryVCardStore(), IPrivateStore: MemoryPrivateStore(),
                   ILastActivityStore: MemoryLastActivityStore()})
    return stores


@pytest.fixture
def world(stores):
    return make_world(stores, extra=(
        (ServiceDiscovery, None),
        (VCardTemp, VCardConfig(max_size_bytes=2048)),
        (PrivateStorage, PrivateConfig(max_item_bytes=200, max_namespaces=2)),
        (LastActivityExtension, None),
        (EntityTime, None),
        (ContactAddresses, ContactAddressesConfig(abuse=("mailto:abuse@example.org",),
                                                  admin=("xmpp:admin@example.org", "mailto:ops@example.org"))),
    ))


def vcard_of(stores, owner):
    return stores[IVCardStore].get(owner).result


@pytest.mark.parametrize("name", ["vcard", "private", "last", "time", "contact_addresses"])
def test_profile_extensions_are_builtin_and_provide_iextension(world, name):
    assert name in BUILTIN and BUILTIN[name][1]
    assert load_class(BUILTIN[name][0]).name == name
    extension, _host = world.sm.extensions[name]
    assert verifyObject(IExtension, extension)


def test_disco_lists_the_profile_features(world):
    alice = world.connect(f"{ALICE}/a")
    reply = iq(world, alice, "get", f"<query xmlns='{ns.DISCO_INFO}'/>", to="example.org")
    features = {f["var"] for f in reply.firstChildElement().elements(ns.DISCO_INFO, "feature")}
    assert {"vcard-temp", "jabber:iq:last", "urn:xmpp:time"} <= features


# -- XEP-0054 ----------------------------------------------------------------------------

def test_own_vcard_is_empty_before_a_set_and_returned_after(world, stores):
    alice = world.connect(f"{ALICE}/a")
    empty = iq(world, alice, "get", "<vCard xmlns='vcard-temp'/>")
    assert empty["type"] == "result"
    card = empty.firstChildElement()
    assert (card.uri, card.name, list(card.elements())) == ("vcard-temp", "vCard", [])
    assert iq(world, alice, "set", VCARD_WITH_PHOTO, iq_id="s")["type"] == "result"
    for to in (None, ALICE):
        card = iq(world, alice, "get", "<vCard xmlns='vcard-temp'/>", iq_id="g", to=to).firstChildElement()
        assert str(next(card.elements("vcard-temp", "FN"))) == "Alice"
    assert vcard_of(stores, ALICE).photo_hash == PHOTO_SHA1


def test_another_accounts_vcard_by_bare_jid(world):
    alice = world.connect(f"{ALICE}/a")
    bob = world.connect(f"{BOB}/b")
    iq(world, alice, "set", VCARD_WITH_PHOTO)
    reply = iq(world, bob, "get", "<vCard xmlns='vcard-temp'/>", to=ALICE)
    assert reply["type"] == "result" and reply["from"] == ALICE
    assert str(next(reply.firstChildElement().elements("vcard-temp", "FN"))) == "Alice"
    assert alice.sent == []   # answered by the server, not forwarded


@pytest.mark.parametrize("to", [CAROL, "nobody@example.org"])
def test_no_vcard_and_no_account_give_the_same_error(world, to):
    bob = world.connect(f"{BOB}/b")
    assert condition(iq(world, bob, "get", "<vCard xmlns='vcard-temp'/>", to=to)) == "service-unavailable"


@pytest.mark.parametrize("to", [ALICE, f"{ALICE}/a", f"{BOB}/b"])
def test_setting_a_vcard_at_another_address_is_forbidden_and_changes_nothing(world, stores, to):
    world.connect(f"{ALICE}/a")
    bob = world.connect(f"{BOB}/b")
    reply = iq(world, bob, "set", "<vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard>", to=to)
    assert condition(reply) == "forbidden"
    assert vcard_of(stores, ALICE) is None and vcard_of(stores, BOB) is None


def test_a_vcard_over_the_size_limit_is_not_acceptable(world, stores):
    alice = world.connect(f"{ALICE}/a")
    iq(world, alice, "set", "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>")
    big = f"<vCard xmlns='vcard-temp'><DESC>{'x' * 2100}</DESC></vCard>"
    assert condition(iq(world, alice, "set", big, iq_id="big")) == "not-acceptable"
    assert "Alice" in vcard_of(stores, ALICE).xml


def test_a_photo_that_is_not_base64_is_a_bad_request(world, stores):
    alice = world.connect(f"{ALICE}/a")
    bad = "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>not*base64!</BINVAL></PHOTO></vCard>"
    assert condition(iq(world, alice, "set", bad)) == "bad-request"
    assert vcard_of(stores, ALICE) is None


def test_vcard_size_limit_is_configurable_and_checked():
    assert section_from_dict(VCardConfig, {"max_size_bytes": 4096}, ("extensions", "vcard")).max_size_bytes == 4096
    with pytest.raises(ConfigError):
        section_from_dict(VCardConfig, {"max_size_bytes": 10}, ("extensions", "vcard"))


# -- XEP-0153 ----------------------------------------------------------------------------

def _update_photos(presence):
    return [str(p) for x in presence.elements("vcard-temp:x:update", "x") for p in x.elements()]


def test_presence_gets_the_photo_hash_when_the_vcard_has_a_photo(world, stores):
    put(stores, ALICE, RosterItem(BOB, subscription="both"))
    put(stores, BOB, RosterItem(ALICE, subscription="both"))
    bob = login(world, f"{BOB}/b")
    alice = world.connect(f"{ALICE}/a")
    iq(world, alice, "set", VCARD_WITH_PHOTO)
    world.send(alice, "<presence><show>away</show></presence>")
    [seen] = [p for p in bob.take() if p.name == "presence"]
    assert _update_photos(seen) == [PHOTO_SHA1]


def test_the_hash_is_read_from_the_store_at_the_first_presence(world, stores):
    put(stores, ALICE, RosterItem(BOB, subscription="both"))
    put(stores, BOB, RosterItem(ALICE, subscription="both"))
    other = world.connect(f"{ALICE}/old")
    iq(world, other, "set", VCARD_WITH_PHOTO)
    world.disconnect(other)
    bob = login(world, f"{BOB}/b")
    alice = world.connect(f"{ALICE}/a")
    world.send(alice, "<presence/>")
    [seen] = [p for p in bob.take() if p.name == "presence"]
    assert _update_photos(seen) == [PHOTO_SHA1]


def test_a_clients_own_update_element_is_left_alone(world, stores):
    put(stores, ALICE, RosterItem(BOB, subscription="both"))
    put(stores, BOB, RosterItem(ALICE, subscription="both"))
    bob = login(world, f"{BOB}/b")
    alice = world.connect(f"{ALICE}/a")
    iq(world, alice, "set", VCARD_WITH_PHOTO)
    world.send(alice, "<presence><x xmlns='vcard-temp:x:update'><photo/></x></presence>")
    [seen] = [p for p in bob.take() if p.name == "presence"]
    assert _update_photos(seen) == [""]


def test_an_update_element_without_photo_gets_the_hash(world, stores):
    put(stores, ALICE, RosterItem(BOB, subscription="both"))
    put(stores, BOB, RosterItem(ALICE, subscription="both"))
    bob = login(world, f"{BOB}/b")
    alice = world.connect(f"{ALICE}/a")
    iq(world, alice, "set", VCARD_WITH_PHOTO)
    world.send(alice, "<presence><x xmlns='vcard-temp:x:update'/></presence>")
    [seen] = [p for p in bob.take() if p.name == "presence"]
    assert _update_photos(seen) == [PHOTO_SHA1]


def test_no_photo_no_update_element(world, stores):
    put(stores, ALICE, RosterItem(BOB, subscription="both"))
    put(stores, BOB, RosterItem(ALICE, subscription="both"))
    bob = login(world, f"{BOB}/b")
    alice = world.connect(f"{ALICE}/a")
    iq(world, alice, "set", "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>")
    world.send(alice, "<presence/>")
    [seen] = [p for p in bob.take() if p.name == "presence"]
    assert list(seen.elements("vcard-temp:x:update", "x")) == []


def test_account_removal_drops_the_vcard(world, stores):
    alice = world.connect(f"{ALICE}/a")
    iq(world, alice, "set", VCARD_WITH_PHOTO)
    world.sm.hooks.notify(AccountRemoved, AccountEvent(ALICE))
    assert vcard_of(stores, ALICE) is None


# -- XEP-0049 ----------------------------------------------------------------------------

PREFS = "<prefs xmlns='urn:example:prefs'><colour>blue</colour></prefs>"


def test_private_data_round_trip(world, stores):
    alice = world.connect(f"{ALICE}/a")
    assert iq(world, alice, "set", f"<query xmlns='jabber:iq:private'>{PREFS}</query>")["type"] == "result"
    reply = iq(world, alice, "get", "<query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'/></query>",
               iq_id="g")
    prefs = next(reply.firstChildElement().elements("urn:example:prefs", "prefs"))
    assert str(next(prefs.elements("urn:example:prefs", "colour"))) == "blue"


def test_private_get_of_nothing_stored_echoes_the_empty_element(world):
    alice = world.connect(f"{ALICE}/a")
    reply = iq(world, alice, "get", "<query xmlns='jabber:iq:private'><none xmlns='urn:example:none'/></query>")
    [child] = list(reply.firstChildElement().elements())
    assert (child.uri, child.name, list(child.elements())) == ("urn:example:none", "none", [])


def test_private_set_replaces_per_namespace(world):
    alice = world.connect(f"{ALICE}/a")
    iq(world, alice, "set", f"<query xmlns='jabber:iq:private'>{PREFS}</query>")
    iq(world, alice, "set", "<query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'/></query>",
       iq_id="s2")
    reply = iq(world, alice, "get", "<query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'/></query>",
               iq_id="g")
    prefs = next(reply.firstChildElement().elements("urn:example:prefs", "prefs"))
    assert list(prefs.elements()) == []


@pytest.mark.parametrize("namespace", ["jabber:iq:roster", "jabber:client", "vcard-temp"])
def test_reserved_namespaces_are_not_acceptable(world, stores, namespace):
    alice = world.connect(f"{ALICE}/a")
    reply = iq(world, alice, "set", f"<query xmlns='jabber:iq:private'><x xmlns='{namespace}'/></query>")
    assert condition(reply) == "not-acceptable"
    assert stores[IPrivateStore].namespaces(ALICE).result == []


def test_a_child_without_its_own_namespace_is_not_acceptable(world):
    alice = world.connect(f"{ALICE}/a")
    assert condition(iq(world, alice, "set", "<query xmlns='jabber:iq:private'><x/></query>")) == "not-acceptable"


@pytest.mark.parametrize("kind", ["get", "set"])
def test_private_query_without_a_child_is_a_bad_request(world, kind):
    alice = world.connect(f"{ALICE}/a")
    assert condition(iq(world, alice, kind, "<query xmlns='jabber:iq:private'/>")) == "bad-request"


def test_private_get_of_two_namespaces_is_a_bad_request(world):
    alice = world.connect(f"{ALICE}/a")
    reply = iq(world, alice, "get", "<query xmlns='jabber:iq:private'><a xmlns='urn:a'/><b xmlns='urn:b'/></query>")
    assert condition(reply) == "bad-request"


@pytest.mark.parametrize("kind", ["get", "set"])
@pytest.mark.parametrize("to", [BOB, f"{BOB}/b"])
def test_private_storage_of_another_account_is_forbidden(world, stores, kind, to):
    alice = world.connect(f"{ALICE}/a")
    world.connect(f"{BOB}/b")
    reply = iq(world, alice, kind, f"<query xmlns='jabber:iq:private'>{PREFS}</query>", to=to)
    assert condition(reply) == "forbidden"
    assert stores[IPrivateStore].namespaces(BOB).result == []


def test_private_item_size_limit(world, stores):
    alice = world.connect(f"{ALICE}/a")
    big = f"<query xmlns='jabber:iq:private'><big xmlns='urn:big'>{'x' * 200}</big></query>"
    assert condition(iq(world, alice, "set", big)) == "not-acceptable"
    assert stores[IPrivateStore].namespaces(ALICE).result == []


def test_private_namespace_limit_is_a_policy_violation_and_changes_nothing(world, stores):
    alice = world.connect(f"{ALICE}/a")
    iq(world, alice, "set", "<query xmlns='jabber:iq:private'><a xmlns='urn:a'/><b xmlns='urn:b'/></query>")
    reply = iq(world, alice, "set", "<query xmlns='jabber:iq:private'><a xmlns='urn:a'>1</a><c xmlns='urn:c'/></query>",
               iq_id="s2")
    assert condition(reply) == "policy-violation"
    assert stores[IPrivateStore].namespaces(ALICE).result == ["urn:a", "urn:b"]
    assert stores[IPrivateStore].get(ALICE, "urn:a").result == "<a xmlns='urn:a'/>"
    # replacing what exists is still fine
    assert iq(world, alice, "set", "<query xmlns='jabber:iq:private'><b xmlns='urn:b'>2</b></query>",
              iq_id="s3")["type"] == "result"


def test_account_removal_drops_private_data(world, stores):
    alice = world.connect(f"{ALICE}/a")
    iq(world, alice, "set", f"<query xmlns='jabber:iq:private'>{PREFS}</query>")
    world.sm.hooks.notify(AccountRemoved, AccountEvent(ALICE))
    assert stores[IPrivateStore].namespaces(ALICE).result == []


# -- XEP-0012 ----------------------------------------------------------------------------

def last_query(world, session, to, iq_id="l"):
    return iq(world, session, "get", "<query xmlns='jabber:iq:last'/>", iq_id=iq_id, to=to)


def test_server_uptime(world):
    world.clock.advance(42)
    alice = world.connect(f"{ALICE}/a")
    reply = last_query(world, alice, "example.org")
    assert reply.firstChildElement()["seconds"] == "42"
    assert str(reply.firstChildElement()) == ""


def test_last_logout_time_and_status_for_a_subscribed_contact(world, stores):
    put(stores, ALICE, RosterItem(BOB, subscription="from"))
    alice = login(world, f"{ALICE}/a")
    world.send(alice, "<presence type='unavailable'><status>Heading home</status></presence>")
    world.clock.advance(100)
    world.disconnect(alice)
    world.clock.advance(903)
    bob = world.connect(f"{BOB}/b")
    query = last_query(world, bob, ALICE).firstChildElement()
    assert (query["seconds"], str(query)) == ("903", "Heading home")
    assert stores[ILastActivityStore].get(ALICE).result == LastActivity(100.0, "Heading home")


def test_online_user_is_zero_seconds(world, stores):
    put(stores, ALICE, RosterItem(BOB, subscription="both"))
    login(world, f"{ALICE}/a")
    world.clock.advance(50)
    bob = world.connect(f"{BOB}/b")
    assert last_query(world, bob, ALICE).firstChildElement()["seconds"] == "0"


def test_a_logout_while_another_resource_stays_is_not_recorded(world, stores):
    first = login(world, f"{ALICE}/a")
    login(world, f"{ALICE}/b")
    world.disconnect(first)
    assert stores[ILastActivityStore].get(ALICE).result is None


@pytest.mark.parametrize("subscription", ["none", "to"])
def test_without_a_subscription_last_activity_is_forbidden(world, stores, subscription):
    put(stores, ALICE, RosterItem(BOB, subscription=subscription))
    alice = login(world, f"{ALICE}/a")
    world.disconnect(alice)
    bob = world.connect(f"{BOB}/b")
    assert condition(last_query(world, bob, ALICE)) == "forbidden"
    assert condition(last_query(world, bob, CAROL, iq_id="c")) == "forbidden"


def test_own_last_activity_and_unknown_accounts(world):
    alice = world.connect(f"{ALICE}/a")
    assert last_query(world, alice, None).firstChildElement()["seconds"] == "0"
    assert condition(last_query(world, alice, "nobody@example.org", iq_id="n")) == "service-unavailable"


def test_never_logged_out_is_item_not_found(world, stores):
    put(stores, ALICE, RosterItem(BOB, subscription="from"))
    bob = world.connect(f"{BOB}/b")
    assert condition(last_query(world, bob, ALICE)) == "item-not-found"


def test_full_jid_query_is_checked_then_delivered(world, stores):
    put(stores, ALICE, RosterItem(BOB, subscription="from"))
    alice = login(world, f"{ALICE}/a")
    bob = world.connect(f"{BOB}/b")
    carol = world.connect(f"{CAROL}/c")
    world.send(bob, f"<iq type='get' id='f' to='{ALICE}/a'><query xmlns='jabber:iq:last'/></iq>")
    [delivered] = alice.take()
    assert (delivered["id"], delivered["from"]) == ("f", f"{BOB}/b")
    assert condition(last_query(world, carol, f"{ALICE}/a")) == "forbidden"
    assert alice.sent == []
    assert condition(last_query(world, bob, f"{ALICE}/gone", iq_id="g")) == "service-unavailable"


def test_removed_account_leaves_no_last_activity(world, stores):
    alice = login(world, f"{ALICE}/a")
    stores[ILastActivityStore].set(ALICE, LastActivity(1.0, "old"))
    stores[IAccountStore].delete(ALICE)
    world.sm.hooks.notify(AccountRemoved, AccountEvent(ALICE))
    world.disconnect(alice)
    assert stores[ILastActivityStore].get(ALICE).result is None


# -- XEP-0202 ----------------------------------------------------------------------------

def test_entity_time(world):
    world.clock.advance(1166551115)          # 2006-12-19T17:58:35Z
    alice = world.connect(f"{ALICE}/a")
    reply = iq(world, alice, "get", "<time xmlns='urn:xmpp:time'/>", to="example.org")
    fields = {c.name: str(c) for c in reply.firstChildElement().elements()}
    assert fields["utc"] == "2006-12-19T17:58:35.000Z"
    assert re.fullmatch(r"[+-]\d\d:\d\d", fields["tzo"])


def test_tzo_format():
    from datetime import datetime, timedelta, timezone

    assert tzo(datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))) == "-05:30"
    assert tzo(datetime(2024, 1, 1, tzinfo=timezone.utc)) == "+00:00"


# -- XEP-0157 ----------------------------------------------------------------------------

def test_contact_addresses_in_server_disco(world):
    alice = world.connect(f"{ALICE}/a")
    reply = iq(world, alice, "get", f"<query xmlns='{ns.DISCO_INFO}'/>", to="example.org")
    [form] = reply.firstChildElement().elements(ns.DATA_FORMS, "x")
    fields = {f["var"]: [str(v) for v in f.elements(ns.DATA_FORMS, "value")]
              for f in form.elements(ns.DATA_FORMS, "field")}
    assert fields == {"FORM_TYPE": [SERVERINFO], "abuse-addresses": ["mailto:abuse@example.org"],
                      "admin-addresses": ["xmpp:admin@example.org", "mailto:ops@example.org"]}


def test_no_addresses_no_form(stores):
    world = make_world(stores, extra=((ServiceDiscovery, None), (ContactAddresses, None)))
    alice = world.connect(f"{ALICE}/a")
    reply = iq(world, alice, "get", f"<query xmlns='{ns.DISCO_INFO}'/>", to="example.org")
    assert list(reply.firstChildElement().elements(ns.DATA_FORMS, "x")) == []


def test_contact_addresses_must_be_uris():
    path = ("extensions", "contact_addresses")
    with pytest.raises(ConfigError, match="abuse"):
        section_from_dict(ContactAddressesConfig, {"abuse": ["abuse@example.org"]}, path)
    assert section_from_dict(ContactAddressesConfig, {"support": ["https://example.org/help"]}, path).support == (
        "https://example.org/help",)
