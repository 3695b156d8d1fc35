"""The SM filter stage: ``OutboundFilter`` and ``InboundFilter`` run first, for every stanza kind."""

from __future__ import annotations

import pytest
from twisted.internet import defer

from tests.support.sm_harness import SMHarness, condition
from tigasepy.extensions.message import MessageDelivery
from tigasepy.extensions.offline import OfflineConfig, OfflineMessages
from tigasepy.extensions.ping import Ping
from tigasepy.sm.events import HANDLED, PASS, InboundFilter, OutboundFilter
from tigasepy.storage.interfaces import IAccountStore, IOfflineStore, IRosterStore
from tigasepy.storage.memory import MemoryAccountStore, MemoryOfflineStore, MemoryRosterStore
from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.stanza import copy_element


class Recorder:
    """A toy extension: records what each filter sees and does what ``verdict`` says."""

    name = "recorder"
    protocols = ()
    config_type = None

    def __init__(self, config, host):
        self.host = host
        self.seen = {"out": [], "in": []}
        self.verdict = {"out": PASS, "in": PASS}
        host.hook(OutboundFilter, lambda e: self._filter("out", e))
        host.hook(InboundFilter, lambda e: self._filter("in", e))

    def _filter(self, direction, event):
        self.seen[direction].append((event.stanza.name, event.sender.full(), event.to.full(),
                                     event.session is not None))
        verdict = self.verdict[direction]
        if isinstance(verdict, Exception):
            raise verdict
        if callable(verdict):
            return verdict(event)
        return verdict


@pytest.fixture
def stores():
    accounts = MemoryAccountStore()
    for user in ("alice", "bob"):
        accounts.create(f"{user}@example.org", [])
    return {IAccountStore: accounts, IRosterStore: MemoryRosterStore(), IOfflineStore: MemoryOfflineStore()}


@pytest.fixture
def world(stores):
    return SMHarness([(Recorder, None), (MessageDelivery, None), (Ping, None),
                      (OfflineMessages, OfflineConfig())], stores)


@pytest.fixture
def recorder(world):
    return world.sm.extensions["recorder"][0]


def _available(world, session):
    world.sm.session(session.jid.full()).available = True


def test_a_message_between_accounts_passes_both_filters_once(world, recorder):
    alice, bob = world.connect("alice@example.org/a"), world.connect("bob@example.org/b")
    _available(world, bob)
    world.send(alice, "<message to='bob@example.org' type='chat'><body>hi</body></message>")
    assert recorder.seen["out"] == [("message", "alice@example.org/a", "bob@example.org", True)]
    assert recorder.seen["in"] == [("message", "alice@example.org/a", "bob@example.org", False)]
    assert len(bob.sent) == 1


def test_own_resources_and_the_server_pass_no_filter(world, recorder):
    one, two = world.connect("alice@example.org/one"), world.connect("alice@example.org/two")
    world.send(one, "<message to='alice@example.org/two'><body>x</body></message>")
    world.send(one, "<iq type='get' id='p1' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>")
    world.send(one, "<iq type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert recorder.seen == {"out": [], "in": []}
    assert len(two.sent) == 1


def test_an_outbound_filter_error_goes_back_to_the_sending_resource(world, recorder):
    recorder.verdict["out"] = StanzaError("not-acceptable")
    alice, bob = world.connect("alice@example.org/a"), world.connect("bob@example.org/b")
    _available(world, bob)
    world.send(alice, "<message to='bob@example.org' id='m1'><body>hi</body></message>")
    [reply] = alice.take()
    assert (reply.name, reply["id"], condition(reply)) == ("message", "m1", "not-acceptable")
    assert bob.sent == [] and recorder.seen["in"] == []


@pytest.mark.parametrize("stanza", [
    "<message to='bob@example.org' type='chat'><body>hi</body></message>",
    "<presence to='bob@example.org/b'/>",
    "<iq type='get' id='q' to='bob@example.org/b'><query xmlns='urn:example'/></iq>",
])
def test_an_inbound_filter_taking_a_stanza_stops_delivery_for_every_kind(world, recorder, stanza):
    recorder.verdict["in"] = HANDLED
    alice, bob = world.connect("alice@example.org/a"), world.connect("bob@example.org/b")
    _available(world, bob)
    world.send(alice, stanza)
    assert bob.sent == [] and alice.sent == []
    assert [s[0] for s in recorder.seen["in"]] == [stanza[1:stanza.index(" ")]]


def test_an_inbound_filter_runs_before_offline_storage(world, recorder, stores):
    def refuse(event):
        if event.type != "error":
            raise StanzaError("service-unavailable")
        return PASS

    recorder.verdict["in"] = refuse
    alice = world.connect("alice@example.org/a")
    world.send(alice, "<message to='bob@example.org' type='chat' id='m2'><body>hi</body></message>")
    [reply] = alice.take()
    assert condition(reply) == "service-unavailable"
    assert stores[IOfflineStore].count("bob@example.org").result == 0


def test_stanzas_from_other_servers_pass_the_inbound_filter(world, recorder):
    bob = world.connect("bob@example.org/b")
    _available(world, bob)
    world.sm.deliver(_parse(
        "<message from='eve@remote.example/x' to='bob@example.org'><body>hi</body></message>"))
    assert recorder.seen["in"] == [("message", "eve@remote.example/x", "bob@example.org", False)]
    assert recorder.seen["out"] == []


def test_route_on_behalf_of_an_account_passes_the_outbound_filter(world, recorder):
    recorder.verdict["out"] = HANDLED
    world.sm.route(_parse("<presence from='alice@example.org/a' to='eve@remote.example'/>"))
    world.sm.route(_parse("<presence from='example.org' to='eve@remote.example'/>"))
    assert recorder.seen["out"] == [("presence", "alice@example.org/a", "eve@remote.example", False)]
    assert [s["from"] for s in world.router.routed] == ["example.org"]


def test_an_asynchronous_filter_lets_the_stanza_go_on_when_it_fires(world, recorder):
    pending = defer.Deferred()
    recorder.verdict["in"] = lambda event: pending
    alice, bob = world.connect("alice@example.org/a"), world.connect("bob@example.org/b")
    _available(world, bob)
    world.send(alice, "<message to='bob@example.org' type='chat'><body>hi</body></message>")
    assert bob.sent == []
    pending.callback(PASS)
    assert len(bob.sent) == 1


def test_no_filter_costs_nothing_but_a_lookup(stores):
    world = SMHarness([(MessageDelivery, None)], stores)
    assert not world.sm.hooks.has(OutboundFilter) and not world.sm.hooks.has(InboundFilter)
    alice, bob = world.connect("alice@example.org/a"), world.connect("bob@example.org/b")
    _available(world, bob)
    world.send(alice, "<message to='bob@example.org' type='chat'><body>hi</body></message>")
    assert len(bob.sent) == 1


def _parse(xml):
    from tests.support.sm_harness import parse_xml
    return copy_element(parse_xml(xml))
