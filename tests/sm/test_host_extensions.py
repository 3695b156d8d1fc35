"""Extensions per virtual host (``[hosts."DOMAIN"] extensions``): a host that does not serve an
extension sees none of it (IQs, hooks, disco, stream features), the other hosts are unchanged."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from tests.support.sm_harness import FakeClientSession, RecordingRouter, condition, parse_xml
from tigasepy.config import ConfigError, config_from_dict
from tigasepy.extensions import extensions_for, hosts_without
from tigasepy.sm.events import AccountEvent, AccountRemoved
from tigasepy.sm.manager import SessionManager
from tigasepy.storage.factory import MEMORY_STORES, Stores
from tigasepy.storage.interfaces import ArchiveQuery, IAccountStore, IArchiveStore
from tigasepy.xmpp import namespaces as ns

MAM = "urn:xmpp:mam:2"
CAPS = "http://jabber.org/protocol/caps"
RAW = {
    "server": {"domains": ["full.example", "lean.example"]},
    "extensions": {"carbons": {"enabled": False}},
    "hosts": {"lean.example": {"extensions": {"mam": False, "ping": False}},
              "full.example": {"extensions": {"carbons": True}}},
}


class World:
    def __init__(self, raw: dict = RAW) -> None:
        self.config = config_from_dict(raw)
        self.stores = {iface: make() for iface, make in MEMORY_STORES.items()}
        for jid in ("anna@full.example", "bert@lean.example", "cleo@lean.example"):
            self.stores[IAccountStore].create(jid, [])
        router = RecordingRouter()
        self.sm = SessionManager(self.config.server.domains, Stores(self.stores), router, Clock(), config=self.config)
        router.local = self.sm
        for cls, ext_config in extensions_for(self.config):
            self.sm.load_extension(cls, ext_config)

    def online(self, full: str) -> FakeClientSession:
        user, _, rest = full.partition("@")
        domain, _, resource = rest.partition("/")
        session = FakeClientSession()
        session.jid = self.sm.bind(session, user, domain, resource)
        bound = self.sm.session(session.jid.full())
        bound.available = True
        return session

    def send(self, session: FakeClientSession, xml: str) -> list:
        session.take()
        stanza = parse_xml(xml)
        stanza["from"] = session.jid.full()
        self.sm.receive(session, stanza)
        return session.take()

    def features(self, session: FakeClientSession, to: str) -> set[str]:
        [reply] = self.send(session, f"<iq type='get' id='d' to='{to}'><query xmlns='{ns.DISCO_INFO}'/></iq>")
        return {f["var"] for f in reply.firstChildElement().elements(ns.DISCO_INFO, "feature")}

    def archive(self, owner: str) -> list:
        return self.stores[IArchiveStore].query(owner, ArchiveQuery(), 100).result


def test_which_hosts_do_not_serve_a_loaded_extension():
    config = config_from_dict(RAW)
    assert hosts_without(config, "mam") == {"lean.example"}
    assert hosts_without(config, "carbons") == {"lean.example"}     # off server-wide, on for full
    assert hosts_without(config, "vcard") == frozenset()
    assert {cls.name for cls, _ in extensions_for(config)} >= {"mam", "carbons", "ping"}


def test_disco_lists_only_what_the_host_serves():
    world = World()
    anna, bert = world.online("anna@full.example/a"), world.online("bert@lean.example/b")
    full, lean = world.features(anna, "full.example"), world.features(bert, "lean.example")
    assert {ns.PING, "urn:xmpp:carbons:2"} <= full
    assert not {ns.PING, "urn:xmpp:carbons:2"} & lean
    assert "vcard-temp" in lean and ns.DISCO_INFO in lean
    # A host's disco#info, whoever asks.
    assert ns.PING not in world.features(anna, "lean.example")
    # Account disco#info too (MAM advertises on accounts).
    assert MAM in world.features(anna, "anna@full.example")
    assert MAM not in world.features(bert, "bert@lean.example")


def test_iqs_of_a_disabled_extension_get_service_unavailable_on_that_host_only():
    world = World()
    anna, bert = world.online("anna@full.example/a"), world.online("bert@lean.example/b")
    [pong] = world.send(anna, f"<iq type='get' id='p' to='full.example'><ping xmlns='{ns.PING}'/></iq>")
    assert pong["type"] == "result"
    [refused] = world.send(bert, f"<iq type='get' id='p' to='lean.example'><ping xmlns='{ns.PING}'/></iq>")
    assert condition(refused) == "service-unavailable"
    [refused] = world.send(bert, f"<iq type='set' id='q'><query xmlns='{MAM}'/></iq>")
    assert condition(refused) == "service-unavailable"
    answers = world.send(anna, f"<iq type='set' id='q'><query xmlns='{MAM}'/></iq>")
    assert answers[-1]["type"] == "result"


def test_hooks_of_a_disabled_extension_pass_that_hosts_stanzas():
    """A chat between the hosts is archived for the account whose host archives, only."""
    world = World()
    anna, bert = world.online("anna@full.example/a"), world.online("bert@lean.example/b")
    world.send(bert, "<message to='anna@full.example' type='chat' id='m1'><body>to anna</body></message>")
    delivered = []
    world.sm.session("bert@lean.example/b").handle.send = delivered.append
    world.send(anna, "<message to='bert@lean.example' type='chat' id='m2'><body>to bert</body></message>")
    assert [m.name for m in delivered] == ["message"]      # delivered; only the archive stood aside
    assert ["to anna", "to bert"] == [m.xml.split("<body>")[1].split("<")[0] for m in world.archive("anna@full.example")]
    assert world.archive("bert@lean.example") == []


def test_account_removal_reaches_an_extension_the_host_does_not_serve():
    world = World()
    world.stores[IArchiveStore].append("bert@lean.example", "x1", "anna@full.example", 1.0, "<message/>")
    world.sm.hooks.notify(AccountRemoved, AccountEvent("bert@lean.example"))
    assert world.archive("bert@lean.example") == []


def test_stream_features_and_caps_differ_per_host():
    world = World()
    full = {f.uri: f for f in world.sm.features_for("full.example", True)}
    lean = {f.uri: f for f in world.sm.features_for("lean.example", True)}
    assert CAPS in full and CAPS in lean
    assert full[CAPS]["ver"] != lean[CAPS]["ver"]
    # Each ver names a node whose disco#info is that host's.
    bert = world.online("bert@lean.example/b")
    node = f"{lean[CAPS]['node']}#{lean[CAPS]['ver']}"
    [reply] = world.send(bert, f"<iq type='get' id='n' to='lean.example'><query xmlns='{ns.DISCO_INFO}' "
                               f"node='{node}'/></iq>")
    assert ns.PING not in {f["var"] for f in reply.firstChildElement().elements(ns.DISCO_INFO, "feature")}


def test_without_per_host_settings_nothing_is_wrapped():
    world = World({"server": {"domains": ["full.example", "lean.example"]}})
    for _extension, host in world.sm.extensions.values():
        assert host.hidden_on == frozenset()
    assert not world.sm.disco.varies_by_domain


@pytest.mark.parametrize("extensions, message", [
    ({"roster": False}, r"hosts\.lean\.example\.extensions\.roster: every host needs this extension"),
    ({"register": True}, r"extensions\.register: per host, registration is set with registration"),
    ({"nonsense": True}, r"extensions\.nonsense: no such extension"),
])
def test_host_extension_names_are_checked(extensions, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"server": {"domains": ["lean.example"]}, "hosts": {"lean.example": {"extensions": extensions}}})
