"""PEP (XEP-0163), avatars over PEP (XEP-0084), private PEP storage (XEP-0223) and bookmarks
(XEP-0402 / XEP-0048 / XEP-0049) with slixmpp over sockets."""

from __future__ import annotations

import asyncio
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004 import Form

from support.xmpp_clients import ClientPool, TestClient, asyncio_test, from_deferred
from tigasepy.storage.interfaces import IRosterStore, RosterItem

TUNE = "http://jabber.org/protocol/tune"
NICK = "http://jabber.org/protocol/nick"
BM2 = "urn:xmpp:bookmarks:1"
PUBSUB = "http://jabber.org/protocol/pubsub"
PRIVATE = "jabber:iq:private"


async def befriend(clients: ClientPool, a: str, b: str) -> None:
    roster = clients.server.service.stores.get(IRosterStore)
    await from_deferred(roster.put_item(f"{a}@localhost", RosterItem(f"{b}@localhost", subscription="both")))
    await from_deferred(roster.put_item(f"{b}@localhost", RosterItem(f"{a}@localhost", subscription="both")))


def with_pep(client: TestClient, *plugins: str) -> None:
    for plugin in ("xep_0030", "xep_0115", "xep_0163", *plugins):
        client.register_plugin(plugin)


def catch(client: TestClient, event: str) -> asyncio.Queue:
    queue: asyncio.Queue = asyncio.Queue()
    client.add_event_handler(event, queue.put_nowait)
    return queue


async def raw_iq(client: TestClient, kind: str, payload: str, to: str | None = None) -> Any:
    iq = client.make_iq(itype=kind, ito=to)
    iq.append(ET.fromstring(payload))
    return await iq.send(timeout=5)


def options(**fields: str) -> Form:
    form = Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden", value=f"{PUBSUB}#publish-options")
    for var, value in fields.items():
        form.add_field(var=f"pubsub#{var}", value=value)
    return form


@asyncio_test
async def test_contact_with_notify_gets_tune_nick_and_avatar_metadata(clients: ClientPool) -> None:
    await befriend(clients, "alice", "bob")
    alice = await clients.login("alice", resource="a", available=True)
    with_pep(alice, "xep_0118", "xep_0172", "xep_0084")
    await alice.plugin["xep_0118"].publish_tune(artist="Nina", title="Sinnerman", timeout=5)

    bob = await clients.login("bob", resource="b")
    with_pep(bob, "xep_0118", "xep_0172", "xep_0084")
    tunes = catch(bob, "user_tune_publish")
    nicks = catch(bob, "user_nick_publish")
    avatars = catch(bob, "avatar_metadata_publish")
    bob.send_presence()
    # the last tune arrives once the server knows bob's caps (+notify)
    tune = await asyncio.wait_for(tunes.get(), 10)
    assert tune["from"].bare == "alice@localhost"
    assert tune["pubsub_event"]["items"]["item"]["tune"]["title"] == "Sinnerman"

    await alice.plugin["xep_0172"].publish_nick("Ali", timeout=5)
    nick = await asyncio.wait_for(nicks.get(), 10)
    assert nick["pubsub_event"]["items"]["item"]["nick"]["nick"] == "Ali"

    data = b"\x89PNG tiny"
    await alice.plugin["xep_0084"].publish_avatar(data, timeout=5)
    import hashlib
    avatar_id = hashlib.sha1(data).hexdigest()
    await alice.plugin["xep_0084"].publish_avatar_metadata(
        [{"id": avatar_id, "bytes": len(data), "type": "image/png"}], timeout=5)
    meta = await asyncio.wait_for(avatars.get(), 10)
    assert meta["pubsub_event"]["items"]["item"]["id"] == avatar_id
    stored = await bob.plugin["xep_0060"].get_items("alice@localhost", "urn:xmpp:avatar:data", timeout=5)
    assert stored["pubsub"]["items"]["item"]["id"] == avatar_id


@asyncio_test
async def test_whitelist_node_is_closed_to_a_contact(clients: ClientPool) -> None:
    await befriend(clients, "alice", "bob")
    alice = await clients.login("alice", resource="a")
    bob = await clients.login("bob", resource="b")
    with_pep(alice)
    with_pep(bob)
    payload = ET.fromstring("<secret xmlns='urn:example:secret'>42</secret>")
    await alice.plugin["xep_0060"].publish("alice@localhost", "urn:example:secret", id="current",
                                           payload=payload, options=options(access_model="whitelist",
                                                                             persist_items="true"), timeout=5)
    mine = await alice.plugin["xep_0060"].get_items("alice@localhost", "urn:example:secret", timeout=5)
    assert mine["pubsub"]["items"]["item"]["id"] == "current"
    with pytest.raises(IqError) as raised:
        await bob.plugin["xep_0060"].get_items("alice@localhost", "urn:example:secret", timeout=5)
    assert raised.value.iq["error"]["condition"] == "not-allowed"
    with pytest.raises(IqError) as raised:    # the node is whitelist already: an open precondition fails
        await alice.plugin["xep_0060"].publish("alice@localhost", "urn:example:secret", id="current",
                                               payload=payload, options=options(access_model="open"), timeout=5)
    assert raised.value.iq["error"]["condition"] == "conflict"


@asyncio_test
async def test_bookmarks_native_and_private_storage_agree(clients: ClientPool) -> None:
    alice = await clients.login("alice", resource="a")
    with_pep(alice, "xep_0048", "xep_0402")
    conference = ET.fromstring(f"<conference xmlns='{BM2}' name='Tea' autojoin='true'><nick>al</nick></conference>")
    await alice.plugin["xep_0060"].publish("alice@localhost", BM2, id="tea@conference.localhost",
                                           payload=conference,
                                           options=options(access_model="whitelist", max_items="max",
                                                           persist_items="true",
                                                           send_last_published_item="never"), timeout=5)
    legacy = await alice.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=5)
    rooms = legacy["private"]["bookmarks"]["conferences"]
    assert [(str(c["jid"]), c["name"], c["nick"], c["autojoin"]) for c in rooms] == \
        [("tea@conference.localhost", "Tea", "al", True)]

    # and the other way: an XEP-0049 client writes, the native node follows
    await raw_iq(alice, "set", f"<query xmlns='{PRIVATE}'><storage xmlns='storage:bookmarks'>"
                               "<conference jid='coffee@conference.localhost' name='Coffee' autojoin='false'/>"
                               "</storage></query>")
    native = await alice.plugin["xep_0060"].get_items("alice@localhost", BM2, timeout=5)
    ids = [item["id"] for item in native["pubsub"]["items"]]
    assert ids == ["coffee@conference.localhost"]


@asyncio_test
async def test_vcard_photo_and_pep_avatar_convert_both_ways(clients: ClientPool) -> None:
    import base64
    import hashlib

    await befriend(clients, "alice", "bob")
    alice = await clients.login("alice", resource="a", available=True)
    bob = await clients.login("bob", resource="b")
    with_pep(alice, "xep_0084")
    with_pep(bob, "xep_0084")
    avatars = catch(bob, "avatar_metadata_publish")
    bob.send_presence()
    await bob.ping_server()
    photo = b"GIF89a vcard photo"
    await raw_iq(alice, "set", f"<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/gif</TYPE>"
                               f"<BINVAL>{base64.b64encode(photo).decode()}</BINVAL></PHOTO></vCard>")
    digest = hashlib.sha1(photo).hexdigest()
    for _ in range(3):      # the last metadata on bob's presence may come first (none yet), then the new one
        meta = await asyncio.wait_for(avatars.get(), 10)
        if meta["pubsub_event"]["items"]["item"]["id"] == digest:
            break
    assert meta["pubsub_event"]["items"]["item"]["id"] == digest

    # PEP -> vCard: an open avatar published by XEP-0084 becomes the vCard photo
    data = b"\x89PNG pep avatar"
    pep_digest = hashlib.sha1(data).hexdigest()
    await alice.plugin["xep_0084"].publish_avatar(data, options=options(access_model="open"), timeout=5)
    await alice.plugin["xep_0084"].publish_avatar_metadata(
        [{"id": pep_digest, "bytes": len(data), "type": "image/png"}], options=options(access_model="open"),
        timeout=5)
    card = await raw_iq(bob, "get", "<vCard xmlns='vcard-temp'/>", to="alice@localhost")
    binval = card.xml.find("{vcard-temp}vCard/{vcard-temp}PHOTO/{vcard-temp}BINVAL")
    assert binval is not None and base64.b64decode(binval.text) == data
