"""PEP (XEP-0163 on a XEP-0060 subset), private PEP storage (XEP-0223) and bookmarks
(XEP-0402 with XEP-0048 / XEP-0049 compatibility) over the SM harness."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tests.support.presence_kit import iq, make_stores, make_world, put
from tests.support.sm_harness import condition
from tigasepy.config import ConfigError, section_from_dict
from tigasepy.extensions import pep_rules as rules
from tigasepy.extensions.disco import ServiceDiscovery
from tigasepy.extensions.message import MessageDelivery
from tigasepy.extensions.pep import CapsCache, PepConfig, PersonalEventing, conferences
from tigasepy.extensions.vcard import VCardTemp
from tigasepy.extensions.private import PrivateConfig, PrivateStorage
from tigasepy.sm.events import AccountEvent, AccountRemoved
from tigasepy.storage.interfaces import IPepStore, IPrivateStore, IVCardStore, RosterItem
from tigasepy.storage.memory import MemoryPepStore, MemoryPrivateStore, MemoryVCardStore
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.caps import verification_string

ALICE = "alice@example.org"
BOB = "bob@example.org"
CAROL = "carol@example.org"
TUNE = "http://jabber.org/protocol/tune"
NICK = "http://jabber.org/protocol/nick"
PUBSUB = rules.PUBSUB
PHOTO = b"\x89PNG tiny"
PHOTO_SHA1 = hashlib.sha1(PHOTO).hexdigest()
PHOTO_B64 = base64.b64encode(PHOTO).decode()
CAPS_NODE = "https://client.example/caps"


def caps_ver(features):
    return verification_string([("client", "pc", "", "t")], features)


@pytest.fixture
def stores():
    stores = make_stores()
    stores.update({IPepStore: MemoryPepStore(), IPrivateStore: MemoryPrivateStore(), IVCardStore: MemoryVCardStore()})
    return stores


@pytest.fixture
def world(stores):
    return make_world(stores, extra=(
        (ServiceDiscovery, None),
        (MessageDelivery, None),
        (VCardTemp, None),
        (PrivateStorage, PrivateConfig()),
        (PersonalEventing, PepConfig(max_items=10, max_item_bytes=300, max_nodes=5)),
    ))


def online(world, full, features=()):
    """Bind ``full`` and send initial presence with caps; answer the server's caps query."""
    session = world.connect(full)
    features = sorted(set(features) | {ns.DISCO_INFO})
    ver = caps_ver(features)
    world.send(session, f"<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
                        f"node='{CAPS_NODE}' ver='{ver}'/></presence>")
    answer_caps(world, session, features)
    return session


def answer_caps(world, session, features):
    for _ in range(3):
        queries = [s for s in session.sent if s.name == "iq" and s.getAttribute("type") == "get"
                   and next(s.elements(ns.DISCO_INFO, "query"), None) is not None]
        for q in queries:
            session.sent.remove(q)
            body = "".join(f"<feature var='{f}'/>" for f in features)
            node = next(q.elements(ns.DISCO_INFO, "query"))["node"]
            world.send(session, f"<iq type='result' id='{q['id']}' to='{q['from']}'>"
                                f"<query xmlns='{ns.DISCO_INFO}' node='{node}'>"
                                f"<identity category='client' type='pc' name='t'/>{body}</query></iq>")


def events(session, node=None):
    found = [s for s in session.sent if s.name == "message"
             and next(s.elements(rules.PUBSUB_EVENT, "event"), None) is not None]
    for s in found:
        session.sent.remove(s)
    out = []
    for s in found:
        event = next(s.elements(rules.PUBSUB_EVENT, "event"))
        child = event.firstChildElement()
        if node is None or child.getAttribute("node") == node:
            out.append(s)
    return out


def publish(world, session, node, payload, item_id=None, options=None, iq_id="p1"):
    item = f"<item id='{item_id}'>{payload}</item>" if item_id else f"<item>{payload}</item>"
    extra = ""
    if options:
        fields = "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in options.items())
        extra = (f"<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
                 f"<value>{rules.PUBLISH_OPTIONS}</value></field>{fields}</x></publish-options>")
    return iq(world, session, "set", f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'>{item}</publish>{extra}</pubsub>",
              iq_id)


def items(world, session, node, to, extra=""):
    return iq(world, session, "get", f"<pubsub xmlns='{PUBSUB}'><items node='{node}'{extra}/></pubsub>", "g1", to=to)


def item_ids(reply):
    return [i["id"] for i in reply.firstChildElement().firstChildElement().elements(PUBSUB, "item")]


def friends(stores, a=ALICE, b=BOB):
    put(stores, a, RosterItem(b, subscription="both"))
    put(stores, b, RosterItem(a, subscription="both"))


# -- pure rules -----------------------------------------------------------------------------

def test_access_models():
    for model, contact, stranger in (("presence", True, False), ("open", True, True), ("whitelist", False, False)):
        config = {"pubsub#access_model": model}
        assert rules.may_read(config, ALICE, ALICE, False)
        assert rules.may_read(config, ALICE, BOB, True) is contact
        assert rules.may_read(config, ALICE, CAROL, False) is stranger


def test_config_parsing_and_preconditions():
    assert rules.normalize("pubsub#max_items", "max", 50) == "50"
    assert rules.normalize("pubsub#persist_items", "true", 50) == "1"
    for var, value in (("pubsub#max_items", "51"), ("pubsub#access_model", "roster"), ("pubsub#nope", "1")):
        with pytest.raises(Exception) as e:
            rules.normalize(var, value, 50)
        assert e.value.condition == "not-acceptable"
    assert rules.unmet({"pubsub#access_model": "whitelist"}, {"pubsub#access_model": "whitelist"}) == []
    assert rules.unmet(dict(rules.DEFAULTS), {"pubsub#access_model": "whitelist"}) == ["pubsub#access_model"]
    assert rules.notify_nodes(["a+notify", "b", "+notify"]) == frozenset({"a"})


def test_caps_cache_is_bounded():
    cache = CapsCache(2)
    cache.put("a", frozenset())
    cache.put("b", frozenset())
    cache.get("a")
    cache.put("c", frozenset())
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 2


def test_config_validation():
    with pytest.raises(ConfigError):
        section_from_dict(PepConfig, {"max_nodes": 0}, ("extensions", "pep"))


# -- service --------------------------------------------------------------------------------

def test_disco_on_the_bare_jid_shows_pep(world):
    alice = world.connect(f"{ALICE}/a")
    reply = iq(world, alice, "get", f"<query xmlns='{ns.DISCO_INFO}'/>", to=ALICE)
    query = reply.firstChildElement()
    identities = {(i["category"], i["type"]) for i in query.elements(ns.DISCO_INFO, "identity")}
    features = {f["var"] for f in query.elements(ns.DISCO_INFO, "feature")}
    assert ("pubsub", "pep") in identities
    assert {f"{PUBSUB}#auto-create", f"{PUBSUB}#publish-options", f"{PUBSUB}#auto-subscribe",
            f"{PUBSUB}#filtered-notifications", "urn:xmpp:bookmarks:1#compat",
            "urn:xmpp:bookmarks:1#compat-pep", "urn:xmpp:pep-vcard-conversion:0"} <= features


def test_publish_notifies_owner_and_contacts_with_notify(world, stores):
    friends(stores)
    friends(stores, ALICE, CAROL)
    alice = online(world, f"{ALICE}/a", [TUNE + "+notify"])
    alice2 = online(world, f"{ALICE}/b", [])
    bob = online(world, f"{BOB}/b", [TUNE + "+notify"])
    carol = online(world, f"{CAROL}/c", [NICK + "+notify"])
    for s in (alice, alice2, bob, carol):
        s.take()
    reply = publish(world, alice, TUNE, "<tune xmlns='http://jabber.org/protocol/tune'><title>X</title></tune>", "t1")
    assert reply["type"] == "result"
    assert next(reply.firstChildElement().elements(PUBSUB, "publish"))["node"] == TUNE
    got = events(bob, TUNE)
    assert len(got) == 1 and got[0]["from"] == ALICE and got[0]["type"] == "headline"
    assert len(events(alice, TUNE)) == 1
    assert events(alice2) == [] and events(carol) == []
    stored = items(world, bob, TUNE, ALICE)
    assert item_ids(stored) == ["t1"]


def test_stranger_gets_presence_subscription_required_and_open_model_lets_in(world, stores):
    alice = world.connect(f"{ALICE}/a")
    carol = world.connect(f"{CAROL}/c")
    publish(world, alice, TUNE, "<tune xmlns='http://jabber.org/protocol/tune'/>")
    reply = items(world, carol, TUNE, ALICE)
    assert condition(reply) == "not-authorized"
    publish(world, alice, NICK, "<nick xmlns='http://jabber.org/protocol/nick'>A</nick>", "n",
            {"pubsub#access_model": "open"}, "p2")
    assert item_ids(items(world, carol, NICK, ALICE)) == ["n"]


def test_whitelist_forbids_a_contact(world, stores):
    friends(stores)
    alice = world.connect(f"{ALICE}/a")
    bob = world.connect(f"{BOB}/b")
    publish(world, alice, "urn:x:secret", "<s xmlns='urn:x:secret'/>", "current",
            {"pubsub#access_model": "whitelist", "pubsub#persist_items": "true"})
    reply = items(world, bob, "urn:x:secret", ALICE)
    assert condition(reply) == "not-allowed"
    assert item_ids(items(world, alice, "urn:x:secret", None)) == ["current"]


def test_precondition_not_met_on_existing_node(world):
    alice = world.connect(f"{ALICE}/a")
    publish(world, alice, TUNE, "<tune xmlns='http://jabber.org/protocol/tune'/>")
    reply = publish(world, alice, TUNE, "<tune xmlns='http://jabber.org/protocol/tune'/>", options={
        "pubsub#access_model": "whitelist"}, iq_id="p2")
    assert condition(reply) == "conflict"
    assert f"<precondition-not-met xmlns='{rules.PUBSUB_ERRORS}'/>" in reply.toXml()


def test_only_the_owner_publishes(world):
    bob = world.connect(f"{BOB}/b")
    reply = iq(world, bob, "set", f"<pubsub xmlns='{PUBSUB}'><publish node='{TUNE}'><item>"
                                  f"<tune xmlns='{TUNE}'/></item></publish></pubsub>", to=ALICE)
    assert condition(reply) == "forbidden"


def test_bad_publishes(world):
    alice = world.connect(f"{ALICE}/a")
    assert condition(iq(world, alice, "set", f"<pubsub xmlns='{PUBSUB}'><publish node='{TUNE}'/></pubsub>")) \
        == "bad-request"
    assert condition(publish(world, alice, TUNE, "<a xmlns='u'/><b xmlns='u'/>")) == "bad-request"
    assert condition(publish(world, alice, TUNE, f"<a xmlns='u'>{'x' * 400}</a>")) == "not-acceptable"


def test_max_items_and_retract_and_items_by_id(world):
    alice = world.connect(f"{ALICE}/a")
    for n in range(4):
        publish(world, alice, "urn:n", f"<n xmlns='urn:n'>{n}</n>", f"i{n}", {"pubsub#max_items": "3"}, f"p{n}")
    assert item_ids(items(world, alice, "urn:n", None)) == ["i3", "i2", "i1"]
    assert item_ids(items(world, alice, "urn:n", None, " max_items='1'")) == ["i3"]
    reply = iq(world, alice, "get", f"<pubsub xmlns='{PUBSUB}'><items node='urn:n'><item id='i2'/></items></pubsub>")
    assert item_ids(reply) == ["i2"]
    ok = iq(world, alice, "set", f"<pubsub xmlns='{PUBSUB}'><retract node='urn:n' notify='1'><item id='i2'/>"
                                 f"</retract></pubsub>", "r1")
    assert ok["type"] == "result"
    gone = iq(world, alice, "set", f"<pubsub xmlns='{PUBSUB}'><retract node='urn:n'><item id='i2'/>"
                                   f"</retract></pubsub>", "r2")
    assert condition(gone) == "item-not-found"
    assert condition(items(world, alice, "urn:none", None)) == "item-not-found"


def test_node_limit_configure_and_delete(world):
    alice = world.connect(f"{ALICE}/a")
    for n in range(5):
        assert publish(world, alice, f"urn:n{n}", "<n xmlns='urn:n'/>", iq_id=f"p{n}")["type"] == "result"
    assert condition(publish(world, alice, "urn:n9", "<n xmlns='urn:n'/>", iq_id="p9")) == "not-allowed"
    conf = iq(world, alice, "get", f"<pubsub xmlns='{rules.PUBSUB_OWNER}'><configure node='urn:n0'/></pubsub>")
    assert "pubsub#access_model" in conf.toXml()
    form = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>"
            f"{rules.NODE_CONFIG}</value></field><field var='pubsub#access_model'><value>open</value></field></x>")
    assert iq(world, alice, "set", f"<pubsub xmlns='{rules.PUBSUB_OWNER}'><configure node='urn:n0'>{form}"
                                   "</configure></pubsub>", "c")["type"] == "result"
    assert publish(world, alice, "urn:n0", "<n xmlns='urn:n'/>", options={"pubsub#access_model": "open"},
                   iq_id="pp")["type"] == "result"
    assert iq(world, alice, "set", f"<pubsub xmlns='{rules.PUBSUB_OWNER}'><delete node='urn:n0'/></pubsub>",
              "d")["type"] == "result"
    assert condition(items(world, alice, "urn:n0", None)) == "item-not-found"


def test_last_item_sent_when_a_contact_comes_online(world, stores):
    friends(stores)
    alice = online(world, f"{ALICE}/a", [])
    publish(world, alice, TUNE, f"<tune xmlns='{TUNE}'><title>Y</title></tune>", "t")
    bob = online(world, f"{BOB}/b", [TUNE + "+notify"])
    got = events(bob, TUNE)
    assert len(got) == 1 and "Y" in got[0].toXml()


def test_account_removal_drops_nodes(world, stores):
    alice = world.connect(f"{ALICE}/a")
    publish(world, alice, TUNE, f"<tune xmlns='{TUNE}'/>")
    world.sm.hooks.notify(AccountRemoved, AccountEvent(ALICE))
    assert stores[IPepStore].nodes(ALICE).result == []


# -- bookmarks ------------------------------------------------------------------------------

BM2 = "urn:xmpp:bookmarks:1"


def test_bookmarks2_publish_shows_in_private_storage(world, stores):
    alice = world.connect(f"{ALICE}/a")
    reply = publish(world, alice, BM2, f"<conference xmlns='{BM2}' name='Room' autojoin='true'><nick>al</nick>"
                                       "</conference>", "room@muc.example.org",
                    {"pubsub#access_model": "whitelist", "pubsub#max_items": "max"})
    assert reply["type"] == "result"
    got = iq(world, alice, "get", "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>", "g")
    xml = got.toXml()
    assert "room@muc.example.org" in xml and "al" in xml and "Room" in xml
    legacy = items(world, alice, "storage:bookmarks", None)
    assert "room@muc.example.org" in legacy.toXml()
    iq(world, alice, "set", f"<pubsub xmlns='{PUBSUB}'><retract node='{BM2}'><item id='room@muc.example.org'/>"
                            "</retract></pubsub>", "r")
    assert conferences(stores[IPrivateStore].get(ALICE, "storage:bookmarks").result) == []


def test_private_storage_bookmarks_show_in_bookmarks2(world, stores):
    alice = world.connect(f"{ALICE}/a")
    iq(world, alice, "set", "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>"
                            "<conference jid='a@muc.example.org' name='A' autojoin='1'><nick>x</nick></conference>"
                            "<conference jid='b@muc.example.org'/></storage></query>")
    reply = items(world, alice, BM2, None)
    assert sorted(item_ids(reply)) == ["a@muc.example.org", "b@muc.example.org"]
    assert "autojoin=\"true\"" in reply.toXml() or "autojoin='true'" in reply.toXml()
    iq(world, alice, "set", "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>"
                            "<conference jid='b@muc.example.org'/></storage></query>", "s2")
    assert item_ids(items(world, alice, BM2, None)) == ["b@muc.example.org"]
    bob = world.connect(f"{BOB}/b")
    assert condition(items(world, bob, BM2, ALICE)) == "not-allowed"


# -- XEP-0398 -------------------------------------------------------------------------------

def test_vcard_photo_becomes_avatar_nodes(world, stores):
    friends(stores)
    alice = world.connect(f"{ALICE}/a")
    bob = online(world, f"{BOB}/b", ["urn:xmpp:avatar:metadata+notify"])
    bob.take()
    reply = iq(world, alice, "set", f"<vCard xmlns='vcard-temp'><FN>A</FN><PHOTO><TYPE>image/png</TYPE>"
                                    f"<BINVAL>{PHOTO_B64}</BINVAL></PHOTO></vCard>")
    assert reply["type"] == "result"
    assert item_ids(items(world, alice, "urn:xmpp:avatar:data", None)) == [PHOTO_SHA1]
    meta = items(world, bob, "urn:xmpp:avatar:metadata", ALICE)
    assert item_ids(meta) == [PHOTO_SHA1] and "image/png" in meta.toXml()
    assert len(events(bob, "urn:xmpp:avatar:metadata")) == 1


def test_pep_avatar_becomes_vcard_photo_and_presence_hash(world, stores):
    alice = world.connect(f"{ALICE}/a")
    iq(world, alice, "set", "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>", "v")
    publish(world, alice, "urn:xmpp:avatar:data", f"<data xmlns='urn:xmpp:avatar:data'>{PHOTO_B64}</data>",
            PHOTO_SHA1, {"pubsub#access_model": "open"}, "d")
    publish(world, alice, "urn:xmpp:avatar:metadata", f"<metadata xmlns='urn:xmpp:avatar:metadata'>"
            f"<info id='{PHOTO_SHA1}' bytes='{len(PHOTO)}' type='image/png'/></metadata>", PHOTO_SHA1,
            {"pubsub#access_model": "open"}, "m")
    card = stores[IVCardStore].get(ALICE).result
    assert card.photo_hash == PHOTO_SHA1 and "Alice" in card.xml and PHOTO_B64 in card.xml
    world.send(alice, "<presence/>")
    own = [s for s in alice.sent if s.name == "presence"]
    assert PHOTO_SHA1 in own[-1].toXml()
    publish(world, alice, "urn:xmpp:avatar:metadata", "<metadata xmlns='urn:xmpp:avatar:metadata'/>", "none",
            {"pubsub#access_model": "open"}, "m2")
    assert stores[IVCardStore].get(ALICE).result.photo_hash is None


def test_pep_avatar_not_converted_unless_open(world, stores):
    alice = world.connect(f"{ALICE}/a")
    publish(world, alice, "urn:xmpp:avatar:data", f"<data xmlns='urn:xmpp:avatar:data'>{PHOTO_B64}</data>",
            PHOTO_SHA1, None, "d")
    publish(world, alice, "urn:xmpp:avatar:metadata", f"<metadata xmlns='urn:xmpp:avatar:metadata'>"
            f"<info id='{PHOTO_SHA1}' bytes='{len(PHOTO)}' type='image/png'/></metadata>", PHOTO_SHA1, None, "m")
    assert stores[IVCardStore].get(ALICE).result is None


# -- XEP-0292 -------------------------------------------------------------------------------

VCARD4 = "urn:ietf:params:xml:ns:vcard-4.0"


def test_vcard4_set_get_and_notify(world, stores):
    friends(stores)
    alice = world.connect(f"{ALICE}/a")
    bob = online(world, f"{BOB}/b", ["urn:xmpp:vcard4+notify"])
    carol = world.connect(f"{CAROL}/c")
    bob.take()
    empty = iq(world, alice, "get", f"<vcard xmlns='{VCARD4}'/>")
    assert empty["type"] == "result" and empty.firstChildElement().name == "vcard"
    card = f"<vcard xmlns='{VCARD4}'><fn><text>Alice</text></fn></vcard>"
    assert iq(world, alice, "set", card, "s")["type"] == "result"
    assert len(events(bob, "urn:xmpp:vcard4")) == 1
    theirs = iq(world, bob, "get", f"<vcard xmlns='{VCARD4}'/>", "g", to=ALICE)
    assert "Alice" in theirs.toXml()
    assert condition(iq(world, carol, "get", f"<vcard xmlns='{VCARD4}'/>", "c", to=ALICE)) == "forbidden"
    assert condition(iq(world, bob, "set", card, "x", to=ALICE)) == "forbidden"
    assert item_ids(items(world, alice, "urn:xmpp:vcard4", None)) == ["current"]


# -- caps queries -----------------------------------------------------------------------------

def test_an_unanswered_caps_query_expires_and_a_forged_answer_is_ignored(world, stores):
    friends(stores)
    alice = online(world, f"{ALICE}/a", [])
    bob = world.connect(f"{BOB}/b")
    features = sorted({TUNE + "+notify", ns.DISCO_INFO})
    world.send(bob, f"<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{CAPS_NODE}' "
                    f"ver='{caps_ver(features)}'/></presence>")
    [query] = [s for s in bob.sent if s.name == "iq"]
    assert world.sm.iq_waiters
    # carol answers in bob's place: not taken
    carol = world.connect(f"{CAROL}/c")
    world.send(carol, f"<iq type='result' id='{query['id']}' to='{ALICE}'><query xmlns='{ns.DISCO_INFO}'>"
                      f"<feature var='{TUNE}+notify'/></query></iq>")
    pep = world.sm.extensions["pep"][0]
    assert len(pep._caps) == 1        # only alice's own caps
    world.clock.advance(31)
    assert not world.sm.iq_waiters and not pep._pending
    publish(world, alice, TUNE, f"<tune xmlns='{TUNE}'/>")
    assert events(bob) == []
