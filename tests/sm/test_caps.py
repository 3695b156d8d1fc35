"""The server's entity capabilities (XEP-0115): stream feature, recomputation, node#ver disco."""

from __future__ import annotations

import pytest

from tests.support.sm_harness import SMHarness, condition
from tigasepy.config import ConfigError, section_from_dict
from tigasepy.extensions.caps import CapsConfig, EntityCapabilities
from tigasepy.extensions.disco import ServiceDiscovery
from tigasepy.extensions.ping import Ping
from tigasepy.extensions.version import SoftwareVersion
from tigasepy.storage.interfaces import IAccountStore
from tigasepy.storage.memory import MemoryAccountStore
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.caps import CAPS, verification_string

NODE = "https://tigasepy.invalid/caps"


@pytest.fixture
def world():
    accounts = MemoryAccountStore()
    accounts.create("alice@example.org", [])
    return SMHarness([(ServiceDiscovery, None), (Ping, None), (EntityCapabilities, CapsConfig())],
                     {IAccountStore: accounts})


def caps_feature(world, authenticated=True):
    found = [f for f in world.sm.features_for("example.org", authenticated) if f.uri == CAPS]
    return found[0] if found else None


def disco_info(world, session, node=None, iq_id="d1"):
    attr = f" node='{node}'" if node else ""
    world.send(session, f"<iq type='get' id='{iq_id}' to='example.org'>"
                        f"<query xmlns='{ns.DISCO_INFO}'{attr}/></iq>")
    [reply] = session.take()
    return reply


def recompute(reply):
    """The XEP-0115 ver of a disco#info result, as a client validating it computes it."""
    query = next(reply.elements(ns.DISCO_INFO, "query"))
    identities = [(i["category"], i["type"], i.getAttribute("xml:lang", ""), i.getAttribute("name", ""))
                  for i in query.elements(ns.DISCO_INFO, "identity")]
    features = [f["var"] for f in query.elements(ns.DISCO_INFO, "feature")]
    forms = [x for x in query.elements() if x.uri == ns.DATA_FORMS]
    return verification_string(identities, features, forms)


def test_caps_are_in_authenticated_stream_features_only(world):
    assert caps_feature(world, authenticated=False) is None
    c = caps_feature(world)
    assert (c["hash"], c["node"]) == ("sha-1", NODE)


def test_ver_matches_a_recomputation_from_disco_info(world):
    alice = world.connect("alice@example.org/a")
    reply = disco_info(world, alice)
    assert CAPS in [f["var"] for f in next(reply.elements(ns.DISCO_INFO, "query")).elements()
                    if f.name == "feature"]
    assert caps_feature(world)["ver"] == recompute(reply)


def test_node_ver_is_answered_with_the_servers_info(world):
    alice = world.connect("alice@example.org/a")
    ver = caps_feature(world)["ver"]
    plain = disco_info(world, alice)
    reply = disco_info(world, alice, f"{NODE}#{ver}", "d2")
    query = next(reply.elements(ns.DISCO_INFO, "query"))
    assert query["node"] == f"{NODE}#{ver}"
    assert recompute(reply) == recompute(plain) == ver
    assert condition(disco_info(world, alice, f"{NODE}#stale", "d3")) == "item-not-found"


def test_ver_follows_extensions_being_loaded_and_unloaded(world):
    alice = world.connect("alice@example.org/a")
    before = caps_feature(world)["ver"]
    world.sm.load_extension(SoftwareVersion, None)
    after = caps_feature(world)["ver"]
    assert after != before and after == recompute(disco_info(world, alice))
    assert condition(disco_info(world, alice, f"{NODE}#{before}", "d2")) == "item-not-found"
    world.sm.unload_extension("version")
    assert caps_feature(world)["ver"] == before
    world.sm.unload_extension("caps")
    assert caps_feature(world) is None
    assert condition(disco_info(world, alice, f"{NODE}#{before}", "d3")) == "item-not-found"
    world.sm.load_extension(SoftwareVersion, None)   # no watcher left behind


def test_config_checks_node_and_hash():
    path = ("extensions", "caps")
    assert section_from_dict(CapsConfig, {"hash": "sha-256"}, path).hash == "sha-256"
    with pytest.raises(ConfigError):
        section_from_dict(CapsConfig, {"hash": "md5"}, path)
    with pytest.raises(ConfigError):
        section_from_dict(CapsConfig, {"node": "a#b"}, path)
