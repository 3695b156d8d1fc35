"""Flexible offline message retrieval (XEP-0013) and its interplay with the XEP-0160 flush."""

from __future__ import annotations

import pytest

from tests.support.sm_harness import SMHarness, condition
from tigasepy.extensions.disco import ServiceDiscovery
from tigasepy.extensions.message import MessageDelivery
from tigasepy.extensions.offline import FLEXIBLE, NS_OFFLINE, OfflineConfig, OfflineMessages
from tigasepy.sm.events import InitialPresence, SessionEvent
from tigasepy.storage.interfaces import IAccountStore, IOfflineStore, IRosterStore
from tigasepy.storage.memory import MemoryAccountStore, MemoryOfflineStore, MemoryRosterStore
from tigasepy.xmpp import namespaces as ns

ALICE, BOB = "alice@example.org", "bob@example.org"


@pytest.fixture
def stores():
    accounts = MemoryAccountStore()
    for user in ("alice", "bob"):
        accounts.create(f"{user}@example.org", [])
    return {IAccountStore: accounts, IRosterStore: MemoryRosterStore(), IOfflineStore: MemoryOfflineStore()}


@pytest.fixture
def world(stores):
    world = SMHarness([(ServiceDiscovery, None), (MessageDelivery, None), (OfflineMessages, OfflineConfig())], stores)
    alice = world.connect(f"{ALICE}/a")
    for n in range(3):
        world.clock.advance(1)
        world.send(alice, f"<message to='{BOB}' type='chat' id='m{n}'><body>m{n}</body></message>")
    assert stores[IOfflineStore].count(BOB).result == 3
    return world


def log_in(world, resource="b", priority=0):
    """Bind a resource of bob (not yet available)."""
    return world.connect(f"{BOB}/{resource}")


def initial_presence(world, session, priority=0):
    bound = world.sm.session(session.jid.full())
    bound.available, bound.priority = True, priority
    world.sm.hooks.notify(InitialPresence, SessionEvent(bound))
    return [s for s in session.take() if s.name == "message"]


def iq(world, session, kind, payload, to=None):
    session.take()
    address = f" to='{to}'" if to else ""
    world.send(session, f"<iq type='{kind}' id='q1'{address}>{payload}</iq>")
    sent = session.take()
    assert sent and sent[-1].name == "iq", [s.toXml() for s in sent]
    return sent[-1], sent[:-1]


def headers(world, session):
    reply, _ = iq(world, session, "get", f"<query xmlns='{ns.DISCO_ITEMS}' node='{NS_OFFLINE}'/>")
    assert reply["type"] == "result"
    return [(i["jid"], i["node"], i.getAttribute("name")) for i in reply.firstChildElement().elements(ns.DISCO_ITEMS, "item")]


def offline_nodes(messages):
    out = []
    for message in messages:
        [offline] = message.elements(NS_OFFLINE, "offline")
        [item] = offline.elements(NS_OFFLINE, "item")
        out.append(item["node"])
    return out


def test_server_advertises_flexible_offline_retrieval(world):
    bob = log_in(world)
    reply, _ = iq(world, bob, "get", f"<query xmlns='{ns.DISCO_INFO}'/>", to="example.org")
    assert NS_OFFLINE in {f["var"] for f in reply.firstChildElement().elements(ns.DISCO_INFO, "feature")}


def test_node_info_gives_the_number_of_messages_and_stops_the_flood(world, stores):
    bob = log_in(world)
    reply, _ = iq(world, bob, "get", f"<query xmlns='{ns.DISCO_INFO}' node='{NS_OFFLINE}'/>")
    query = reply.firstChildElement()
    assert query["node"] == NS_OFFLINE
    [identity] = query.elements(ns.DISCO_INFO, "identity")
    assert (identity["category"], identity["type"]) == ("automation", "message-list")
    assert [f["var"] for f in query.elements(ns.DISCO_INFO, "feature")] == [NS_OFFLINE]
    [form] = query.elements(ns.DATA_FORMS, "x")
    values = {f["var"]: str(next(f.elements(ns.DATA_FORMS, "value"))) for f in form.elements(ns.DATA_FORMS, "field")}
    assert values == {"FORM_TYPE": NS_OFFLINE, "number_of_messages": "3"}
    assert initial_presence(world, bob) == [], "no flood after a XEP-0013 request"
    assert stores[IOfflineStore].count(BOB).result == 3


def test_headers_list_node_and_sender_in_order(world):
    bob = log_in(world)
    found = headers(world, bob)
    assert [(jid, name) for jid, _node, name in found] == [(BOB, f"{ALICE}/a")] * 3
    nodes = [node for _jid, node, _name in found]
    assert nodes == sorted(nodes) and len(set(nodes)) == 3
    assert initial_presence(world, bob) == []


def test_fetch_sends_every_message_with_its_node_and_keeps_them(world, stores):
    bob = log_in(world)
    nodes = [node for _j, node, _n in headers(world, bob)]
    reply, messages = iq(world, bob, "get", f"<offline xmlns='{NS_OFFLINE}'><fetch/></offline>")
    assert reply["type"] == "result"
    assert [str(m.body) for m in messages] == ["m0", "m1", "m2"]
    assert offline_nodes(messages) == nodes
    assert all(list(m.elements(ns.DELAY, "delay")) for m in messages)
    assert stores[IOfflineStore].count(BOB).result == 3, "fetching removes nothing"


def test_fetch_is_also_accepted_as_an_iq_set(world):
    bob = log_in(world)
    reply, messages = iq(world, bob, "set", f"<offline xmlns='{NS_OFFLINE}'><fetch/></offline>")
    assert reply["type"] == "result" and [str(m.body) for m in messages] == ["m0", "m1", "m2"]


def test_fetch_without_headers_also_stops_the_flood(world):
    bob = log_in(world)
    iq(world, bob, "get", f"<offline xmlns='{NS_OFFLINE}'><fetch/></offline>")
    assert initial_presence(world, bob) == []


def test_view_and_remove_by_node(world, stores):
    bob = log_in(world)
    nodes = [node for _j, node, _n in headers(world, bob)]
    reply, messages = iq(world, bob, "get", f"<offline xmlns='{NS_OFFLINE}'><item action='view' node='{nodes[1]}'/></offline>")
    assert reply["type"] == "result" and [str(m.body) for m in messages] == ["m1"]
    reply, _ = iq(world, bob, "set", f"<offline xmlns='{NS_OFFLINE}'><item action='remove' node='{nodes[0]}'/>"
                                     f"<item action='remove' node='{nodes[2]}'/></offline>")
    assert reply["type"] == "result"
    assert [node for _j, node, _n in headers(world, bob)] == [nodes[1]]


def test_unknown_nodes_are_item_not_found_and_nothing_is_removed(world, stores):
    bob = log_in(world)
    nodes = [node for _j, node, _n in headers(world, bob)]
    reply, messages = iq(world, bob, "get", f"<offline xmlns='{NS_OFFLINE}'><item action='view' node='nope'/></offline>")
    assert condition(reply) == "item-not-found" and messages == []
    reply, _ = iq(world, bob, "set", f"<offline xmlns='{NS_OFFLINE}'><item action='remove' node='{nodes[0]}'/>"
                                     "<item action='remove' node='nope'/></offline>")
    assert condition(reply) == "item-not-found"
    assert stores[IOfflineStore].count(BOB).result == 3


def test_purge_removes_everything(world, stores):
    bob = log_in(world)
    reply, _ = iq(world, bob, "set", f"<offline xmlns='{NS_OFFLINE}'><purge/></offline>")
    assert reply["type"] == "result"
    assert stores[IOfflineStore].count(BOB).result == 0
    assert headers(world, bob) == []


@pytest.mark.parametrize("kind,payload", [
    ("get", "<purge/>"),
    ("get", "<item action='remove' node='x'/>"),
    ("set", "<item action='view' node='x'/>"),
    ("get", ""),
    ("get", "<fetch/><purge/>"),
    ("get", "<fetch/><item action='view' node='x'/>"),
])
def test_malformed_requests_are_bad_request(world, kind, payload):
    bob = log_in(world)
    reply, _ = iq(world, bob, kind, f"<offline xmlns='{NS_OFFLINE}'>{payload}</offline>")
    assert condition(reply) == "bad-request"


def test_another_account_is_forbidden(world, stores):
    alice = world.sm.session(f"{ALICE}/a").handle
    for kind, payload in (("get", f"<query xmlns='{ns.DISCO_ITEMS}' node='{NS_OFFLINE}'/>"),
                          ("get", f"<query xmlns='{ns.DISCO_INFO}' node='{NS_OFFLINE}'/>"),
                          ("get", f"<offline xmlns='{NS_OFFLINE}'><fetch/></offline>"),
                          ("set", f"<offline xmlns='{NS_OFFLINE}'><purge/></offline>")):
        reply, messages = iq(world, alice, kind, payload, to=BOB)
        assert condition(reply) == "forbidden" and messages == [], payload
    assert stores[IOfflineStore].count(BOB).result == 3
    assert not world.sm.session(f"{ALICE}/a").data.get(FLEXIBLE)


def test_a_second_resource_gets_no_flood_while_a_flexible_one_is_bound(world, stores):
    flexible = log_in(world, "flex")
    headers(world, flexible)
    other = log_in(world, "other")
    assert initial_presence(world, other) == []
    world.disconnect(flexible)
    third = log_in(world, "third")
    assert [str(m.body) for m in initial_presence(world, third)] == ["m0", "m1", "m2"], \
        "once no flexible session is left, the usual flush applies"


def test_a_plain_client_still_gets_the_flood(world, stores):
    bob = log_in(world)
    assert [str(m.body) for m in initial_presence(world, bob)] == ["m0", "m1", "m2"]
    assert stores[IOfflineStore].count(BOB).result == 0
