"""XEP-0352 Client State Indication on client streams: what an inactive client gets later."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

from tests.support.c2s_harness import HEADER, C2SHarness
from tests.support.sm_harness import SMHarness
from tigasepy.c2s.csi import CSI, CsiBuffer, holdable
from tigasepy.c2s.stream_management import SM
from tigasepy.config import C2SConfig, CsiConfig
from tigasepy.extensions.message import MessageDelivery
from tigasepy.extensions.ping import Ping
from tigasepy.storage.interfaces import IAccountStore, IOfflineStore, IRosterStore
from tigasepy.storage.memory import MemoryAccountStore, MemoryOfflineStore, MemoryRosterStore
from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp import namespaces as ns

COMPOSING = "<composing xmlns='http://jabber.org/protocol/chatstates'/>"
ACTIVE_STATE = "<active xmlns='http://jabber.org/protocol/chatstates'/>"


@pytest.fixture
def sm():
    accounts = MemoryAccountStore()
    for user in ("alice", "bob"):
        accounts.create(f"{user}@example.org", [])
    stores = {IAccountStore: accounts, IRosterStore: MemoryRosterStore(), IOfflineStore: MemoryOfflineStore()}
    return SMHarness([(Ping, None), (MessageDelivery, None)], stores).sm


def config(**csi) -> C2SConfig:
    return replace(C2SConfig(), tls_required=False, csi=replace(CsiConfig(), **csi))


@pytest.fixture
def alice(sm):
    c2s = C2SHarness(sm, config=config(max_buffered=5))
    c2s.login("alice", resource="home")
    return c2s


def deliver(sm, xml):
    sm.deliver(parse_stanza(xml))


def presence(sender, show=None, kind=None):
    type_attr = f" type='{kind}'" if kind else ""
    body = f"<show>{show}</show>" if show else ""
    return f"<presence from='{sender}' to='alice@example.org/home'{type_attr}>{body}</presence>"


def message(payload, sender="bob@example.org/b", kind="chat"):
    return f"<message from='{sender}' to='alice@example.org/home' type='{kind}'>{payload}</message>"


def summary(elements):
    """(name, from, show or body or first child) for each stanza, for compact asserts."""
    out = []
    for e in elements:
        detail = None
        if e.name == "presence":
            detail = e.getAttribute("type") or (str(e.show) if e.show is not None else "available")
        elif e.name == "message":
            detail = str(e.body) if e.body is not None else next(e.elements()).name
        else:
            detail = e.getAttribute("type")
        out.append((e.name, e.getAttribute("from"), detail))
    return out


def test_csi_is_offered_after_authentication(sm):
    c2s = C2SHarness(sm, config=config())
    c2s.receive(HEADER)
    [before] = c2s.output()
    assert next(before.elements(CSI, "csi"), None) is None
    other = c2s.another_connection()
    other.receive(HEADER)
    other.output()
    token = base64.b64encode(b"\0alice\0secret").decode()
    other.receive(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{token}</auth>")
    other.output()
    other.view.restart()
    other.receive(HEADER)
    [features] = other.output()
    assert next(features.elements(CSI, "csi"), None) is not None


def test_csi_is_not_offered_when_disabled_and_its_elements_are_unknown(sm):
    c2s = C2SHarness(sm, config=config(enabled=False))
    c2s.login()
    c2s.receive(f"<inactive xmlns='{CSI}'/>")
    c2s.output()
    assert c2s.stream_error() == "unsupported-stanza-type"


def test_an_active_client_gets_everything_at_once(sm, alice):
    deliver(sm, presence("bob@example.org/b", "away"))
    deliver(sm, message(COMPOSING))
    assert [e.name for e in alice.output()] == ["presence", "message"]


def test_inactive_holds_presence_and_chat_states_until_a_message_with_a_body(sm, alice):
    alice.receive(f"<inactive xmlns='{CSI}'/>")
    deliver(sm, presence("bob@example.org/b", "away"))
    deliver(sm, presence("carol@example.org/c", "dnd"))
    deliver(sm, message(COMPOSING))
    deliver(sm, presence("bob@example.org/b", "xa"))          # replaces bob's "away"
    assert alice.output() == []
    deliver(sm, message("<body>hello</body>" + ACTIVE_STATE))
    assert summary(alice.output()) == [
        ("presence", "carol@example.org/c", "dnd"),
        ("message", "bob@example.org/b", "composing"),
        ("presence", "bob@example.org/b", "xa"),
        ("message", "bob@example.org/b", "hello"),
    ]
    # still inactive: the next update waits again
    deliver(sm, presence("bob@example.org/b", kind="unavailable"))
    assert alice.output() == []


def test_active_flushes_in_order_before_anything_after_it(sm, alice):
    alice.receive(f"<inactive xmlns='{CSI}'/>")
    deliver(sm, presence("bob@example.org/b", "away"))
    deliver(sm, message(COMPOSING))
    alice.receive(f"<active xmlns='{CSI}'/><iq type='get' id='p' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert summary(alice.output()) == [
        ("presence", "bob@example.org/b", "away"),
        ("message", "bob@example.org/b", "composing"),
        ("iq", "example.org", "result"),
    ]
    deliver(sm, presence("bob@example.org/b", "chat"))
    assert len(alice.output()) == 1


def test_an_iq_or_a_subscription_request_is_important(sm, alice):
    alice.receive(f"<inactive xmlns='{CSI}'/>")
    deliver(sm, presence("bob@example.org/b", "away"))
    alice.receive("<iq type='get' id='p' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert [e.name for e in alice.output()] == ["presence", "iq"]
    deliver(sm, presence("carol@example.org/c", "away"))
    deliver(sm, "<presence from='dave@example.org' to='alice@example.org/home' type='subscribe'/>")
    assert summary(alice.output()) == [("presence", "carol@example.org/c", "away"),
                                       ("presence", "dave@example.org", "subscribe")]


def test_a_full_buffer_is_flushed(sm, alice):
    alice.receive(f"<inactive xmlns='{CSI}'/>")
    for i in range(4):
        deliver(sm, presence(f"u{i}@example.org/r", "away"))
    assert alice.output() == []
    deliver(sm, presence("u4@example.org/r", "away"))
    assert [e["from"] for e in alice.output()] == [f"u{i}@example.org/r" for i in range(5)]


def test_inactive_before_bind_is_ignored(sm):
    c2s = C2SHarness(sm, config=config())
    c2s.receive(HEADER)
    c2s.output()
    token = base64.b64encode(b"\0alice\0secret").decode()
    c2s.receive(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{token}</auth>")
    c2s.output()
    c2s.view.restart()
    c2s.receive(HEADER)
    c2s.output()
    c2s.receive(f"<inactive xmlns='{CSI}'/>")
    c2s.receive("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>home</resource></bind></iq>")
    [result] = c2s.output()
    assert result["type"] == "result"
    deliver(sm, presence("bob@example.org/b", "away"))
    assert len(c2s.output()) == 1   # the stream began active


def test_held_stanzas_are_counted_only_when_written(sm, alice):
    alice.receive(f"<enable xmlns='{SM}' resume='true'/>")
    alice.output()
    alice.receive(f"<inactive xmlns='{CSI}'/>")
    deliver(sm, presence("bob@example.org/b", "away"))
    deliver(sm, presence("bob@example.org/b", "xa"))
    assert alice.stream.acks.sent == 0
    alice.receive(f"<active xmlns='{CSI}'/>")
    assert alice.stream.acks.sent == 1


def test_held_stanzas_survive_a_dropped_connection_and_csi_restarts_active(sm, alice):
    alice.receive(f"<enable xmlns='{SM}' resume='true'/>")
    [enabled] = [e for e in alice.output() if e.name == "enabled"]
    alice.receive(f"<inactive xmlns='{CSI}'/>")
    deliver(sm, presence("bob@example.org/b", "away"))
    alice.stream.connectionLost(Failure(ConnectionLost()))
    again = alice.another_connection()
    again.receive(HEADER)
    again.output()
    token = base64.b64encode(b"\0alice\0secret").decode()
    again.receive(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{token}</auth>")
    again.output()
    again.view.restart()
    again.receive(HEADER)
    again.output()
    again.receive(f"<resume xmlns='{SM}' previd='{enabled['id']}' h='0'/>")
    out = again.output()
    assert summary(out[1:2]) == [("presence", "bob@example.org/b", "away")]
    deliver(sm, presence("carol@example.org/c", "dnd"))     # a resumed stream starts active
    assert summary(again.output()) == [("presence", "carol@example.org/c", "dnd")]


# -- the rules, as units -----------------------------------------------------------------------

@pytest.mark.parametrize("xml,expected", [
    ("<presence from='b@x/r'/>", "presence"),
    ("<presence from='b@x/r' type='unavailable'/>", "presence"),
    ("<presence from='b@x' type='subscribe'/>", None),
    ("<presence from='b@x' type='error'/>", None),
    (message(COMPOSING), "chatstate"),
    (message(COMPOSING + "<thread>t1</thread><no-store xmlns='urn:xmpp:hints'/>"), "chatstate"),
    (message(COMPOSING + "<body>hi</body>"), None),
    (message("<received xmlns='urn:xmpp:receipts' id='x'/>"), None),
    (message(COMPOSING, kind="groupchat"), None),
    (message(COMPOSING, kind="error"), None),
    ("<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>", None),
])
def test_what_may_wait(xml, expected):
    assert holdable(parse_stanza(xml)) == expected


def test_buffer_keeps_the_latest_presence_per_sender_in_arrival_order():
    buffer = CsiBuffer(10)
    for xml in ("<presence from='a@x/1'><show>away</show></presence>", message(COMPOSING, sender="a@x/1"),
                "<presence from='b@x/1'/>", "<presence from='a@x/1'><show>xa</show></presence>"):
        assert buffer.hold(parse_stanza(xml))
    assert not buffer.hold(parse_stanza(message("<body>x</body>")))
    held = buffer.drain()
    assert [(e.name, e["from"]) for e in held] == [("message", "a@x/1"), ("presence", "b@x/1"),
                                                    ("presence", "a@x/1")]
    assert str(held[-1].show) == "xa"
    assert len(buffer) == 0
