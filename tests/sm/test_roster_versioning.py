"""Roster versioning (RFC 6121 2.6, XEP-0237) through the SM."""

from __future__ import annotations

import pytest

from tests.support.presence_kit import iq, login, make_stores, make_world, roster_set
from tigasepy.extensions.roster import ROSTER_VERSIONING, RosterConfig
from tigasepy.storage.interfaces import IRosterStore, RosterItem
from tigasepy.xmpp import namespaces as ns

ALICE = "alice@example.org"
BOB = "bob@example.org"


@pytest.fixture
def stores():
    return make_stores()


@pytest.fixture
def world(stores):
    return make_world(stores)


def get_roster(world, session, ver=None, iq_id="r1"):
    attr = f" ver='{ver}'" if ver is not None else ""
    return iq(world, session, "get", f"<query xmlns='jabber:iq:roster'{attr}/>", iq_id)


def query_of(stanza):
    return next(stanza.elements(ns.ROSTER, "query"), None)


def roster_pushes(session):
    found = [s for s in session.take() if s.name == "iq" and s.getAttribute("type") == "set"]
    return [query_of(s) for s in found if query_of(s) is not None]


def test_the_stream_feature_is_offered_after_authentication_only(world):
    before = world.sm.features_for("example.org", False)
    after = world.sm.features_for("example.org", True)
    assert not any(f.uri == ROSTER_VERSIONING for f in before)
    assert [f.name for f in after if f.uri == ROSTER_VERSIONING] == ["ver"]


def test_no_feature_and_no_versions_when_turned_off(stores):
    world = make_world(stores, roster=RosterConfig(versioning=False))
    assert not any(f.uri == ROSTER_VERSIONING for f in world.sm.features_for("example.org", True))
    alice = login(world, f"{ALICE}/a", roster=False, available=False)
    reply = get_roster(world, alice, ver="")
    assert query_of(reply).getAttribute("ver") is None


def test_empty_ver_gets_the_full_roster_with_its_version(world, stores):
    stores[IRosterStore].put_item(ALICE, RosterItem(BOB, subscription="both"))
    alice = login(world, f"{ALICE}/a", roster=False, available=False)
    reply = get_roster(world, alice, ver="")
    query = query_of(reply)
    assert query["ver"] == str(stores[IRosterStore].get_version(ALICE).result)
    assert [i["jid"] for i in query.elements(ns.ROSTER, "item")] == [BOB]


def test_an_unchanged_roster_gets_an_empty_result(world, stores):
    stores[IRosterStore].put_item(ALICE, RosterItem(BOB, subscription="both"))
    alice = login(world, f"{ALICE}/a", roster=False, available=False)
    ver = query_of(get_roster(world, alice, ver=""))["ver"]
    reply = get_roster(world, alice, ver=ver, iq_id="r2")
    assert reply["type"] == "result" and list(reply.elements()) == []
    assert world.sm.session(f"{ALICE}/a").interested    # pushes still come


def test_a_changed_roster_gets_the_full_roster_with_the_new_version(world, stores):
    alice = login(world, f"{ALICE}/a", roster=False, available=False)
    old = query_of(get_roster(world, alice, ver=""))["ver"]
    stores[IRosterStore].put_item(ALICE, RosterItem(BOB, subscription="to"))
    query = query_of(get_roster(world, alice, ver=old, iq_id="r2"))
    assert query["ver"] != old
    assert [i["jid"] for i in query.elements(ns.ROSTER, "item")] == [BOB]


def test_a_roster_get_without_ver_has_no_version(world):
    alice = login(world, f"{ALICE}/a", roster=False, available=False)
    assert query_of(get_roster(world, alice)).getAttribute("ver") is None


def test_pushes_carry_unique_growing_versions_that_a_later_get_accepts(world):
    alice = login(world, f"{ALICE}/a")
    other = login(world, f"{ALICE}/b")
    roster_set(world, alice, f"<item jid='{BOB}' name='Bob'/>", "s1")
    roster_set(world, alice, f"<item jid='{BOB}' name='Robert'/>", "s2")
    world.send(alice, f"<presence to='{BOB}' type='subscribe'/>")
    roster_set(world, alice, f"<item jid='{BOB}' subscription='remove'/>", "s3")
    versions = [int(q["ver"]) for q in roster_pushes(other)]
    assert len(versions) == 4 and versions == sorted(set(versions))
    reply = get_roster(world, other, ver=str(versions[-1]), iq_id="r9")
    assert list(reply.elements()) == []
