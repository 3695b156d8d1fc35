"""vcard-temp (XEP-0054), avatar hashes (XEP-0153), private storage (XEP-0049), last activity
(XEP-0012), entity time (XEP-0202) and contact addresses (XEP-0157) with slixmpp over sockets."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from support.xmpp_clients import ClientPool, TestClient, asyncio_test, from_deferred
from tigasepy.storage.interfaces import IRosterStore, RosterItem

VCARD = "vcard-temp"
PRIVATE = "jabber:iq:private"
PHOTO = b"GIF89a a tiny avatar"
CONTACT = {"admin": ["xmpp:admin@localhost", "mailto:ops@localhost"], "abuse": ["mailto:abuse@localhost"]}

pytestmark = pytest.mark.parametrize("server_overrides", [{"extensions": {"contact_addresses": CONTACT}}])


async def raw_iq(client: TestClient, kind: str, payload: str, to: str | None = None) -> Any:
    """Send an IQ carrying ``payload`` (XML text); returns the result (raises IqError)."""
    iq = client.make_iq(itype=kind, ito=to)
    iq.append(ET.fromstring(payload))
    return await iq.send(timeout=5)


def error_condition(raised: pytest.ExceptionInfo) -> str:
    return raised.value.iq["error"]["condition"]


@asyncio_test
async def test_vcard_set_by_its_owner_and_read_by_another_user(clients: ClientPool) -> None:
    alice = await clients.login("alice", resource="a")
    bob = await clients.login("bob", resource="b")
    for client in (alice, bob):
        client.register_plugin("xep_0054")
    empty = await raw_iq(alice, "get", f"<vCard xmlns='{VCARD}'/>")
    assert list(empty.xml.find(f"{{{VCARD}}}vCard")) == []
    card = alice.plugin["xep_0054"].make_vcard()
    card["FN"] = "Alice Liddell"
    card["NICKNAME"] = "alice"
    await alice.plugin["xep_0054"].publish_vcard(card, timeout=5)

    mine = await raw_iq(alice, "get", f"<vCard xmlns='{VCARD}'/>")
    assert mine.xml.find(f"{{{VCARD}}}vCard/{{{VCARD}}}FN").text == "Alice Liddell"
    theirs = await bob.plugin["xep_0054"].get_vcard("alice@localhost", timeout=5)
    assert theirs["vcard_temp"]["FN"] == "Alice Liddell"
    assert theirs["from"].bare == "alice@localhost"


@asyncio_test
async def test_vcard_write_to_another_account_is_forbidden(clients: ClientPool) -> None:
    alice = await clients.login("alice", resource="a")
    bob = await clients.login("bob", resource="b")
    with pytest.raises(IqError) as raised:
        await raw_iq(bob, "set", f"<vCard xmlns='{VCARD}'><FN>Mallory</FN></vCard>", to="alice@localhost")
    assert error_condition(raised) == "forbidden"
    with pytest.raises(IqError) as raised:
        await raw_iq(bob, "get", f"<vCard xmlns='{VCARD}'/>", to="alice@localhost")
    assert error_condition(raised) == "service-unavailable"      # alice has no vCard: unchanged
    await alice.ping_server()


@asyncio_test
async def test_the_server_adds_the_avatar_hash_to_presence(clients: ClientPool) -> None:
    roster = clients.server.service.stores.get(IRosterStore)
    await from_deferred(roster.put_item("alice@localhost", RosterItem("bob@localhost", subscription="both")))
    await from_deferred(roster.put_item("bob@localhost", RosterItem("alice@localhost", subscription="both")))
    bob = await clients.login("bob", resource="b", available=True)
    alice = await clients.login("alice", resource="a")
    photo = base64.b64encode(PHOTO).decode()
    await raw_iq(alice, "set", f"<vCard xmlns='{VCARD}'><PHOTO><TYPE>image/gif</TYPE><BINVAL>{photo}</BINVAL>"
                               "</PHOTO></vCard>")
    alice.send_presence()
    presence = await bob.presences.wait_for(lambda p: p["from"].bare == "alice@localhost" and p["type"] == "available",
                                            what="alice's presence")
    hash_element = presence.xml.find("{vcard-temp:x:update}x/{vcard-temp:x:update}photo")
    assert hash_element is not None and hash_element.text == hashlib.sha1(PHOTO).hexdigest()


@asyncio_test
async def test_private_storage_round_trip_and_reserved_namespace(clients: ClientPool) -> None:
    alice = await clients.login("alice", resource="a")
    await raw_iq(alice, "set", f"<query xmlns='{PRIVATE}'><storage xmlns='storage:bookmarks'>"
                               "<conference jid='tea@conference.localhost' name='Tea'/></storage></query>")
    result = await raw_iq(alice, "get", f"<query xmlns='{PRIVATE}'><storage xmlns='storage:bookmarks'/></query>")
    conference = result.xml.find(f"{{{PRIVATE}}}query/{{storage:bookmarks}}storage/{{storage:bookmarks}}conference")
    assert conference is not None and conference.get("name") == "Tea"
    # a new session sees the same data
    again = await clients.login("alice", resource="again")
    result = await raw_iq(again, "get", f"<query xmlns='{PRIVATE}'><storage xmlns='storage:bookmarks'/></query>")
    assert result.xml.find(f"{{{PRIVATE}}}query/{{storage:bookmarks}}storage/{{storage:bookmarks}}conference") \
        is not None
    with pytest.raises(IqError) as raised:
        await raw_iq(alice, "set", f"<query xmlns='{PRIVATE}'><x xmlns='jabber:iq:roster'/></query>")
    assert error_condition(raised) == "not-acceptable"
    bob = await clients.login("bob", resource="b")
    with pytest.raises(IqError) as raised:
        await raw_iq(bob, "get", f"<query xmlns='{PRIVATE}'><storage xmlns='storage:bookmarks'/></query>",
                     to="alice@localhost")
    assert error_condition(raised) == "forbidden"


@asyncio_test
async def test_last_activity_uptime_and_logout(clients: ClientPool) -> None:
    roster = clients.server.service.stores.get(IRosterStore)
    await from_deferred(roster.put_item("carol@localhost", RosterItem("bob@localhost", subscription="from")))
    bob = await clients.login("bob", resource="b")
    bob.register_plugin("xep_0012")
    uptime = await bob.plugin["xep_0012"].get_last_activity("localhost", timeout=5)
    assert int(uptime["last_activity"]["seconds"]) >= 0
    carol = await clients.login("carol", resource="c", available=True)
    online = await bob.plugin["xep_0012"].get_last_activity("carol@localhost", timeout=5)
    assert int(online["last_activity"]["seconds"]) == 0
    carol.send_presence(ptype="unavailable", pstatus="Gone fishing")
    await carol.ping_server()
    await carol.close()
    for _ in range(50):                       # the logout is recorded once the server saw the stream end
        try:
            last = await bob.plugin["xep_0012"].get_last_activity("carol@localhost", timeout=5)
        except IqError:
            last = None
        if last is not None and last.xml.find("{jabber:iq:last}query").text:
            break
        await bob.ping_server()
    assert last is not None and last.xml.find("{jabber:iq:last}query").text == "Gone fishing"
    assert 0 <= int(last["last_activity"]["seconds"]) < 30
    alice = await clients.login("alice", resource="a")
    alice.register_plugin("xep_0012")
    with pytest.raises(IqError) as raised:
        await alice.plugin["xep_0012"].get_last_activity("carol@localhost", timeout=5)
    assert error_condition(raised) == "forbidden"


@asyncio_test
async def test_entity_time_and_contact_addresses(clients: ClientPool) -> None:
    alice = await clients.login("alice", resource="a")
    alice.register_plugin("xep_0202")
    alice.register_plugin("xep_0030")
    time = await alice.plugin["xep_0202"].get_entity_time("localhost", timeout=5)
    # Read the text: slixmpp appends its own "Z" to <utc/> and cannot parse the XEP's own format.
    utc = time.xml.find("{urn:xmpp:time}time/{urn:xmpp:time}utc").text
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", utc)
    assert re.fullmatch(r"[+-]\d\d:\d\d", time.xml.find("{urn:xmpp:time}time/{urn:xmpp:time}tzo").text)
    info = await alice.plugin["xep_0030"].get_info(jid="localhost", timeout=5)
    form = info.xml.find("{http://jabber.org/protocol/disco#info}query/{jabber:x:data}x")
    fields = {f.get("var"): [v.text for v in f.findall("{jabber:x:data}value")]
              for f in form.findall("{jabber:x:data}field")}
    assert fields["FORM_TYPE"] == ["http://jabber.org/network/serverinfo"]
    assert fields["admin-addresses"] == CONTACT["admin"]
    assert fields["abuse-addresses"] == CONTACT["abuse"]
