"""Privacy list rules (XEP-0016 2.1) and the blocklist view of a list (XEP-0191 sections 4-5)."""

from __future__ import annotations

import pytest
from twisted.words.protocols.jabber.jid import JID

from tigasepy.extensions.privacy_rules import (
    UNDECIDED, CompiledList, RosterView, blocked_jids, parse_item, peer_forms, with_blocks, without_blocks,
)
from tigasepy.storage.interfaces import PrivacyItem
from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp.errors import StanzaError


def deny(order, value=None, type_="jid", kinds=()):
    return PrivacyItem(order=order, action="deny", type=type_ if value else None, value=value,
                       kinds=frozenset(kinds))


@pytest.mark.parametrize("item,peer,matches", [
    ("user@d.example/r", "user@d.example/r", True),
    ("user@d.example/r", "user@d.example/other", False),
    ("user@d.example", "user@d.example/any", True),
    ("user@d.example", "other@d.example", False),
    ("d.example/r", "d.example/r", True),
    ("d.example/r", "user@d.example/r", True),
    ("d.example/r", "d.example/s", False),
    ("d.example", "user@d.example/r", True),
    ("d.example", "d.example", True),
    ("d.example", "sub.d.example", False),
])
def test_jid_items_match_in_the_four_xep_forms(item, peer, matches):
    compiled = CompiledList([deny(1, item)])
    assert (compiled.match("message", peer_forms(JID(peer))) is not None) is matches


def test_the_lowest_order_decides_and_kinds_filter():
    compiled = CompiledList([
        PrivacyItem(order=5, action="allow"),
        deny(3, "eve@e.example", kinds=("message",)),
        PrivacyItem(order=4, action="allow", type="jid", value="eve@e.example"),
    ])
    forms = peer_forms(JID("eve@e.example/x"))
    assert compiled.match("message", forms).action == "deny"
    assert compiled.match("iq", forms).order == 4
    assert compiled.match(None, peer_forms(JID("bob@b.example"))).order == 5


def test_roster_items_need_the_roster_only_when_they_are_reached():
    compiled = CompiledList([deny(1, "eve@e.example"),
                             PrivacyItem(order=2, action="deny", type="subscription", value="none")])
    assert compiled.match(None, peer_forms(JID("eve@e.example"))).order == 1
    assert compiled.match(None, peer_forms(JID("bob@b.example"))) is UNDECIDED
    assert compiled.match(None, peer_forms(JID("bob@b.example")), RosterView("both")) is None
    assert compiled.match(None, peer_forms(JID("bob@b.example")), RosterView()).order == 2


def test_parse_item_prepares_jids_and_reads_kinds():
    element = parse_stanza("<item xmlns='jabber:iq:privacy' type='jid' value='Eve@E.Example/R' action='deny'"
                           " order='7'><message/><presence-out/></item>")
    assert parse_item(element) == PrivacyItem(order=7, action="deny", type="jid", value="eve@e.example/R",
                                              kinds=frozenset({"message", "presence-out"}))
    with pytest.raises(StanzaError):
        parse_item(parse_stanza("<item xmlns='jabber:iq:privacy' action='deny' order='٣'/>"))


def test_blocks_go_first_and_unblocking_keeps_other_items():
    items = (PrivacyItem(order=10, action="allow", type="group", value="Friends"), deny(20, "a@x"))
    blocked = with_blocks(items, ["b@x", "a@x", "c@x"])
    assert [(i.order, i.value) for i in blocked] == [(8, "b@x"), (9, "c@x"), (10, "Friends"), (20, "a@x")]
    assert blocked_jids(blocked) == ["b@x", "c@x", "a@x"]
    assert without_blocks(blocked, ["b@x"]) == blocked[1:]
    assert without_blocks(blocked, None) == (items[0],)
    crowded = with_blocks((deny(0, "a@x"),), ["b@x", "c@x"])
    assert [(i.order, i.value) for i in crowded] == [(0, "b@x"), (1, "c@x"), (2, "a@x")]
