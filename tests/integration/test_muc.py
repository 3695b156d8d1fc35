"""Multi-User Chat (XEP-0045) in-process, with slixmpp's xep_0045 plugin over real sockets:
two users in a room, groupchat messages, history on join, a kick, a password-protected room
refusing a wrong password, a MAM query on the room (XEP-0313) and XEP-0410 self-ping."""

from __future__ import annotations

from typing import Any

import pytest
from slixmpp.exceptions import IqError, PresenceError

from support.server import RunningServer
from support.xmpp_clients import CLIENT, ClientPool, asyncio_test, stanza_text

SERVICE = "conference.localhost"
ROOM = f"lounge@{SERVICE}"
MUC_USER = "http://jabber.org/protocol/muc#user"
MAM = "urn:xmpp:mam:2"


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    return {"components": {"muc": {"class": "tigasepy.components.muc:MultiUserChat", "domain": SERVICE}}}


def status_codes(stanza: Any) -> set[str]:
    return {s.get("code") for s in stanza.xml.iter(f"{{{MUC_USER}}}status")}


async def muc_client(clients: ClientPool, user: str) -> Any:
    client = clients.new(user)
    client.register_plugin("xep_0045")
    client.register_plugin("xep_0004")
    await client.login(clients.server.c2s_port)
    client.send_presence()
    await client.ping_server()
    return client


async def configure(client: Any, room: str, **values: Any) -> None:
    form = await client.plugin["xep_0045"].get_room_config(room)
    form["type"] = "submit"
    for key, value in values.items():
        form.field[f"muc#roomconfig_{key}"]["value"] = value
    await client.plugin["xep_0045"].set_room_config(room, form)


@asyncio_test
async def test_room_chat_history_kick_and_archive(xmpp_server: RunningServer, clients: ClientPool) -> None:
    alice = await muc_client(clients, "alice")
    bob = await muc_client(clients, "bob")
    own, _subject, _occupants, _history = await alice.plugin["xep_0045"].join_muc_wait(ROOM, "Alice", timeout=10)
    assert {"110", "201"} <= status_codes(own)
    await configure(alice, ROOM, enablelogging=True)
    alice.send_message(mto=ROOM, mbody="first!", mtype="groupchat")
    await alice.messages.wait_for(lambda m: stanza_text(m, f"{{{CLIENT}}}body") == "first!")

    own, _subject, occupants, history = await bob.plugin["xep_0045"].join_muc_wait(ROOM, "Bob", maxstanzas=10,
                                                                          timeout=10)
    assert "110" in status_codes(own) and "201" not in status_codes(own)
    assert "Alice" in [p["from"].resource for p in occupants]
    assert [m["body"] for m in history] == ["first!"]
    assert history[0]["delay"]["stamp"] is not None

    bob.send_message(mto=ROOM, mbody="hello Alice", mtype="groupchat")
    got = await alice.messages.wait_for(lambda m: stanza_text(m, f"{{{CLIENT}}}body") == "hello Alice")
    assert got["from"] == f"{ROOM}/Bob"
    stanza_id = got.xml.find("{urn:xmpp:sid:0}stanza-id")
    assert stanza_id is not None and stanza_id.get("by") == ROOM

    # XEP-0410: Bob pings his own occupant JID
    await bob.plugin["xep_0199"].send_ping(f"{ROOM}/Bob", timeout=10)

    # MAM on the room
    iq = bob.make_iq_set(ito=ROOM)
    query = iq.xml.makeelement(f"{{{MAM}}}query", {"queryid": "q1"})
    iq.xml.append(query)
    result = await iq.send(timeout=10)
    assert result.xml.find(f"{{{MAM}}}fin").get("complete") == "true"
    archived = [m for m in bob.messages.items if m.xml.find(f"{{{MAM}}}result") is not None]
    bodies = [r.xml.find(f".//{{{CLIENT}}}body").text for r in archived]
    assert bodies == ["first!", "hello Alice"]

    # the owner kicks Bob
    await alice.plugin["xep_0045"].set_role(ROOM, "Bob", "none", reason="enough")
    kicked = await bob.presences.wait_for(
        lambda p: p.xml.get("type") == "unavailable" and "307" in status_codes(p))
    assert "110" in status_codes(kicked)
    with pytest.raises(IqError) as err:
        await bob.plugin["xep_0199"].send_ping(f"{ROOM}/Bob", timeout=10)
    assert err.value.condition == "not-acceptable"


@asyncio_test
async def test_password_protected_room(xmpp_server: RunningServer, clients: ClientPool) -> None:
    alice = await muc_client(clients, "alice")
    carol = await muc_client(clients, "carol")
    room = f"secret@{SERVICE}"
    await alice.plugin["xep_0045"].join_muc_wait(room, "Alice", timeout=10)
    await configure(alice, room, roomsecret="open sesame", passwordprotectedroom=True)
    with pytest.raises(PresenceError) as err:
        await carol.plugin["xep_0045"].join_muc_wait(room, "Carol", password="wrong", timeout=10)
    assert err.value.condition == "not-authorized"
    own, *_ = await carol.plugin["xep_0045"].join_muc_wait(room, "Carol", password="open sesame", timeout=10)
    assert "110" in status_codes(own)


@asyncio_test
async def test_server_lists_the_muc_service(xmpp_server: RunningServer, clients: ClientPool) -> None:
    alice = await muc_client(clients, "alice")
    alice.register_plugin("xep_0030")
    items = await alice.plugin["xep_0030"].get_items(jid="localhost", timeout=10)
    assert SERVICE in [jid for jid, _node, _name in items["disco_items"]["items"]]
    info = await alice.plugin["xep_0030"].get_info(jid=SERVICE, timeout=10)
    assert ("conference", "text") in [(c, t) for c, t, _lang, _name in info["disco_info"]["identities"]]
    assert "http://jabber.org/protocol/muc" in info["disco_info"]["features"]


@asyncio_test
async def test_persistent_room_and_its_archive_survive_a_restart(xmpp_server: RunningServer,
                                                                 clients: ClientPool) -> None:
    from twisted.internet import reactor

    from support.server import start_server
    from support.xmpp_clients import from_deferred

    alice = await muc_client(clients, "alice")
    room = f"kept@{SERVICE}"
    await alice.plugin["xep_0045"].join_muc_wait(room, "Alice", timeout=10)
    await configure(alice, room, persistentroom=True, enablelogging=True, roomname="Kept")
    await alice.plugin["xep_0045"].set_affiliation(room, "member", jid="bob@localhost")
    alice.send_message(mto=room, mbody="still here?", mtype="groupchat")
    await alice.messages.wait_for(lambda m: stanza_text(m, f"{{{CLIENT}}}body") == "still here?")
    await clients.close_all()
    await from_deferred(xmpp_server.stop())

    restarted = await from_deferred(start_server(xmpp_server.config.data_path, reactor,
                                                 {"components": {"muc": {
                                                     "class": "tigasepy.components.muc:MultiUserChat",
                                                     "domain": SERVICE}}}))
    restarted.passwords.update(xmpp_server.passwords)
    second = ClientPool(restarted)
    try:
        bob = await muc_client(second, "bob")
        bob.register_plugin("xep_0030")
        info = await bob.plugin["xep_0030"].get_info(jid=room, timeout=10)
        assert "muc_persistent" in info["disco_info"]["features"]
        own, *_ = await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=10)
        item = own.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")
        assert item.get("affiliation") == "member"
        iq = bob.make_iq_set(ito=room)
        iq.xml.append(iq.xml.makeelement(f"{{{MAM}}}query", {}))
        await iq.send(timeout=10)
        archived = [m for m in bob.messages.items if m.xml.find(f"{{{MAM}}}result") is not None]
        assert [r.xml.find(f".//{{{CLIENT}}}body").text for r in archived] == ["still here?"]
    finally:
        await second.close_all()
        await from_deferred(restarted.stop())


@asyncio_test
async def test_direct_invitation_is_routed(xmpp_server: RunningServer, clients: ClientPool) -> None:
    """XEP-0249: a direct invitation is a message between users, delivered unchanged."""
    alice = await muc_client(clients, "alice")
    bob = await muc_client(clients, "bob")
    message = alice.make_message(mto="bob@localhost")
    invite = message.xml.makeelement("{jabber:x:conference}x", {"jid": ROOM, "reason": "join us"})
    message.xml.append(invite)
    message.send()
    got = await bob.messages.wait_for(lambda m: m.xml.find("{jabber:x:conference}x") is not None)
    x = got.xml.find("{jabber:x:conference}x")
    assert (x.get("jid"), x.get("reason")) == (ROOM, "join us")
    assert got["from"].bare == "alice@localhost"
