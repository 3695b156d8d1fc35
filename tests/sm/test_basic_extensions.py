"""Disco (XEP-0030), version (XEP-0092), ping (XEP-0199) and in-band registration (XEP-0077)."""

from __future__ import annotations

import pytest
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyClass

from tests.support.sm_harness import SMHarness, condition, parse_xml
from tigasepy.extensions import BUILTIN, load_class
from tigasepy.extensions.disco import ServiceDiscovery
from tigasepy.extensions.ping import Ping
from tigasepy.extensions.register import InBandRegistration, RegisterConfig
from tigasepy.extensions.version import SoftwareVersion, VersionConfig
from tigasepy.interfaces import IExtension
from tigasepy.storage.interfaces import IAccountStore, IOfflineStore, IRosterStore
from tigasepy.storage.memory import MemoryAccountStore, MemoryOfflineStore, MemoryRosterStore
from tigasepy.xmpp import namespaces as ns

_sync = SynchronousTestCase()


@pytest.fixture
def stores():
    accounts = MemoryAccountStore()
    accounts.create("alice@example.org", [])
    return {IAccountStore: accounts, IRosterStore: MemoryRosterStore(), IOfflineStore: MemoryOfflineStore()}


@pytest.fixture
def world(stores):
    return SMHarness([(ServiceDiscovery, None), (Ping, None), (SoftwareVersion, VersionConfig()),
                      (InBandRegistration, RegisterConfig(max_registrations_per_minute=2))], stores)


@pytest.mark.parametrize("name", [n for n in BUILTIN if n not in ("roster", "presence")])
def test_builtin_extensions_provide_the_extension_interface(name):
    verifyClass(IExtension, load_class(BUILTIN[name][0]))


def test_server_disco_info_lists_what_the_loaded_extensions_declared(world):
    alice = world.connect("alice@example.org/a")
    world.send(alice, f"<iq type='get' id='d' to='example.org'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    [reply] = alice.sent
    query = reply.firstChildElement()
    features = {f["var"] for f in query.elements(ns.DISCO_INFO, "feature")}
    assert {ns.DISCO_INFO, ns.DISCO_ITEMS, ns.PING, ns.VERSION, ns.REGISTER} <= features
    [identity] = query.elements(ns.DISCO_INFO, "identity")
    assert (identity["category"], identity["type"]) == ("server", "im")


def test_unloading_an_extension_withdraws_its_features_and_handlers(world):
    world.sm.unload_extension("ping")
    alice = world.connect("alice@example.org/a")
    world.send(alice, f"<iq type='get' id='d' to='example.org'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    world.send(alice, f"<iq type='get' id='p' to='example.org'><ping xmlns='{ns.PING}'/></iq>")
    info, ping = alice.sent
    assert ns.PING not in {f["var"] for f in info.firstChildElement().elements(ns.DISCO_INFO, "feature")}
    assert condition(ping) == "service-unavailable"


def test_disco_info_with_unknown_node_gets_item_not_found(world):
    alice = world.connect("alice@example.org/a")
    world.send(alice, f"<iq type='get' id='d' to='example.org'><query xmlns='{ns.DISCO_INFO}' node='x'/></iq>")
    assert condition(alice.sent[0]) == "item-not-found"


def test_account_disco_info_answers_for_existing_accounts_only(world):
    alice = world.connect("alice@example.org/a")
    world.send(alice, f"<iq type='get' id='d1' to='alice@example.org'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    world.send(alice, f"<iq type='get' id='d2' to='ghost@example.org'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    mine, ghost = alice.sent
    [identity] = mine.firstChildElement().elements(ns.DISCO_INFO, "identity")
    assert (identity["category"], identity["type"]) == ("account", "registered")
    assert condition(ghost) == "service-unavailable"


def test_version_reports_the_server_name_and_version(world):
    import tigasepy

    alice = world.connect("alice@example.org/a")
    world.send(alice, f"<iq type='get' id='v' to='example.org'><query xmlns='{ns.VERSION}'/></iq>")
    query = alice.sent[0].firstChildElement()
    fields = {child.name: str(child) for child in query.elements()}
    assert fields == {"name": "tigasepy", "version": tigasepy.__version__}


def test_ping_without_to_is_answered_by_the_server(world):
    alice = world.connect("alice@example.org/a")
    world.send(alice, f"<iq type='get' id='p'><ping xmlns='{ns.PING}'/></iq>")
    [reply] = alice.sent
    assert (reply["type"], reply.getAttribute("from")) == ("result", None)


def _register(world, xml):
    return _sync.successResultOf(world.sm.unauthenticated_iq("example.org", parse_xml(xml)))


def test_registration_form_offers_username_and_password(world):
    reply = _register(world, f"<iq type='get' id='r'><query xmlns='{ns.REGISTER}'/></iq>")
    query = reply.firstChildElement()
    assert {c.name for c in query.elements()} >= {"username", "password", "instructions"}


def test_registration_creates_an_account_and_refuses_a_taken_name(world, stores):
    ok = _register(world, f"<iq type='set' id='r1'><query xmlns='{ns.REGISTER}'>"
                          "<username>carol</username><password>pw-carol</password></query></iq>")
    taken = _register(world, f"<iq type='set' id='r2'><query xmlns='{ns.REGISTER}'>"
                             "<username>carol</username><password>other</password></query></iq>")
    assert ok["type"] == "result"
    assert _sync.successResultOf(stores[IAccountStore].exists("carol@example.org"))
    assert condition(taken) == "conflict"


def test_registration_without_password_gets_not_acceptable(world):
    reply = _register(world, f"<iq type='set' id='r'><query xmlns='{ns.REGISTER}'>"
                             "<username>dave</username></query></iq>")
    assert condition(reply) == "not-acceptable"


def test_registration_flood_gets_resource_constraint(world):
    replies = [_register(world, f"<iq type='set' id='r{n}'><query xmlns='{ns.REGISTER}'>"
                                f"<username>u{n}</username><password>pw</password></query></iq>")
               for n in range(3)]
    assert [r["type"] for r in replies[:2]] == ["result", "result"]
    assert condition(replies[2]) == "resource-constraint"


def test_unauthenticated_iq_for_other_namespaces_gets_service_unavailable(world):
    reply = _register(world, f"<iq type='get' id='x'><ping xmlns='{ns.PING}'/></iq>")
    assert condition(reply) == "service-unavailable"


def test_account_removal_deletes_the_account_and_ends_its_sessions(world, stores):
    alice = world.connect("alice@example.org/a")
    other = world.connect("alice@example.org/b")
    world.send(alice, f"<iq type='set' id='rm'><query xmlns='{ns.REGISTER}'><remove/></query></iq>")
    [reply] = alice.sent
    assert reply["type"] == "result"
    assert not _sync.successResultOf(stores[IAccountStore].exists("alice@example.org"))
    assert alice.closed[0] == other.closed[0] == "not-authorized"


def test_password_change_for_another_user_is_not_allowed(world):
    alice = world.connect("alice@example.org/a")
    world.send(alice, f"<iq type='set' id='pw'><query xmlns='{ns.REGISTER}'>"
                      "<username>bob</username><password>x</password></query></iq>")
    assert condition(alice.sent[0]) == "not-allowed"
