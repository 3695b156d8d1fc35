"""Message Archive Management (XEP-0313, XEP-0359, XEP-0441) with slixmpp over real sockets."""

from __future__ import annotations

from typing import Any

import pytest
from slixmpp.exceptions import IqError

from support.xmpp_clients import CLIENT, ClientPool, TestClient, asyncio_test, is_chat, stanza_text

NS_MAM = "urn:xmpp:mam:2"
NS_SID = "urn:xmpp:sid:0"
NS_FORWARD = "urn:xmpp:forward:0"

async def mam_client(pool: ClientPool, user: str, resource: str) -> TestClient:
    """A logged-in, available client with slixmpp's MAM, preferences and disco plugins."""
    client = pool.new(user, resource=resource)
    for plugin in ("xep_0030", "xep_0059", "xep_0297", "xep_0313", "xep_0441"):
        client.register_plugin(plugin)
    await client.login(pool.server.c2s_port)
    client.send_presence()
    await client.ping_server()
    return client


def send_chats(sender: TestClient, to: str, bodies: list[str]) -> None:
    for body in bodies:
        sender.send_message(mto=to, mbody=body, mtype="chat")


def forwarded_body(result: Any) -> str | None:
    """The body of the archived message in a MAM result message."""
    return stanza_text(result, f"{{{NS_MAM}}}result/{{{NS_FORWARD}}}forwarded/{{{CLIENT}}}message/{{{CLIENT}}}body")


def stanza_ids(message: Any) -> list[tuple[str, str]]:
    return [(e.get("by"), e.get("id")) for e in message.xml.findall(f"{{{NS_SID}}}stanza-id")]


async def receive_all(client: TestClient, bodies: list[str]) -> list[Any]:
    return [await client.messages.wait_for(is_chat(body), what=f"message {body!r}") for body in bodies]


@asyncio_test
async def test_query_returns_the_messages_in_order_across_pages(clients: ClientPool) -> None:
    """bob's archive, paged three at a time with RSM, gives every message once and in
    order; the ids of the results are the stanza-ids bob got on the live messages."""
    alice = await mam_client(clients, "alice", "a")
    bob = await mam_client(clients, "bob", "b")
    bodies = [f"message {n}" for n in range(8)]
    send_chats(alice, "bob@localhost", bodies)
    live = await receive_all(bob, bodies)
    live_ids = []
    for message in live:
        [(by, uid)] = stanza_ids(message)
        assert by == "bob@localhost"
        live_ids.append(uid)

    pages, after = [], None
    while True:
        rsm = {"max": 3, "after": after} if after else {"max": 3}
        page = await bob.plugin["xep_0313"].retrieve(rsm=rsm)
        pages.append(page)
        if page.xml.find(f"{{{NS_MAM}}}fin").get("complete") == "true":
            break
        after = page["mam_fin"]["rsm"]["last"]
        assert len(pages) < 10
    got = [forwarded_body(m) for page in pages for m in page["mam"]["results"]]
    ids = [m["mam_result"]["id"] for page in pages for m in page["mam"]["results"]]
    assert got == bodies
    assert ids == live_ids
    assert [len(page["mam"]["results"]) for page in pages] == [3, 3, 2]
    assert pages[0]["mam_fin"]["rsm"]["count"] == "8"

    # the last page first (an empty <before/>), still oldest first within the page
    # (slixmpp's retrieve() turns before=True into the text "True", so build this one)
    iq = bob.make_iq_set()
    iq["mam"]["queryid"] = "last-page"
    iq["mam"]["rsm"]["max"] = "3"
    iq["mam"]["rsm"]["before"] = True
    fin = await iq.send(timeout=5)
    results = []
    while (found := bob.messages.take(lambda m: m.xml.find(f"{{{NS_MAM}}}result") is not None
                                       and m.xml.find(f"{{{NS_MAM}}}result").get("queryid") == "last-page")):
        results.append(found)
    assert [forwarded_body(m) for m in results] == bodies[-3:]
    assert fin["mam_fin"]["rsm"]["first_index"] == "5"
    # alice's archive has her side
    sent = await alice.plugin["xep_0313"].retrieve(rsm={"max": 20})
    assert [forwarded_body(m) for m in sent["mam"]["results"]] == bodies


@asyncio_test
async def test_with_filter_returns_one_conversation(clients: ClientPool) -> None:
    """A query with 'with' returns only the messages exchanged with that contact."""
    alice = await mam_client(clients, "alice", "a")
    bob = await mam_client(clients, "bob", "b")
    carol = await mam_client(clients, "carol", "c")
    for sender, to, body, receiver in ((alice, "bob@localhost", "to bob 1", bob),
                                       (alice, "carol@localhost", "to carol", carol),
                                       (bob, "alice@localhost", "from bob", alice),
                                       (alice, "bob@localhost/b", "to bob 2", bob)):
        send_chats(sender, to, [body])
        await receive_all(receiver, [body])

    result = await alice.plugin["xep_0313"].retrieve(with_jid="bob@localhost", rsm={"max": 10})
    assert [forwarded_body(m) for m in result["mam"]["results"]] == ["to bob 1", "from bob", "to bob 2"]
    result = await alice.plugin["xep_0313"].retrieve(with_jid="carol@localhost", rsm={"max": 10})
    assert [forwarded_body(m) for m in result["mam"]["results"]] == ["to carol"]


@asyncio_test
async def test_prefs_never_keeps_a_contact_out_of_the_archive(clients: ClientPool) -> None:
    """With alice on bob's 'never' list, alice's messages reach bob without a stanza-id of
    bob's archive and never show up in it; others still do."""
    alice = await mam_client(clients, "alice", "a")
    bob = await mam_client(clients, "bob", "b")
    carol = await mam_client(clients, "carol", "c")
    await bob.plugin["xep_0441"].set_preferences(default="always", never=["alice@localhost"])
    default, always, never = await bob.plugin["xep_0441"].get_preferences()
    assert (default, [str(j) for j in never]) == ("always", ["alice@localhost"])

    send_chats(alice, "bob@localhost", ["private"])
    send_chats(carol, "bob@localhost", ["kept"])
    [private] = await receive_all(bob, ["private"])
    [kept] = await receive_all(bob, ["kept"])
    assert stanza_ids(private) == []
    assert [by for by, _ in stanza_ids(kept)] == ["bob@localhost"]

    result = await bob.plugin["xep_0313"].retrieve(rsm={"max": 10})
    assert [forwarded_body(m) for m in result["mam"]["results"]] == ["kept"]


@asyncio_test
async def test_archive_is_advertised_and_private(clients: ClientPool) -> None:
    """The account advertises MAM; querying another account's archive is forbidden."""
    alice = await mam_client(clients, "alice", "a")
    info = await alice.plugin["xep_0030"].get_info(jid="alice@localhost")
    features = set(info["disco_info"]["features"])
    assert {NS_MAM, f"{NS_MAM}#extended", NS_SID} <= features
    with pytest.raises(IqError) as raised:
        await alice.plugin["xep_0313"].retrieve(jid="bob@localhost")
    assert raised.value.condition == "forbidden"


@asyncio_test
async def test_messages_kept_offline_are_archived_and_found_after_login(clients: ClientPool) -> None:
    """A message to an offline user is in the user's archive at the next login, under the
    stanza-id the offline copy carries."""
    alice = await mam_client(clients, "alice", "a")
    send_chats(alice, "bob@localhost", ["while you were out"])
    await alice.ping_server()
    bob = await mam_client(clients, "bob", "b")
    [offline] = await receive_all(bob, ["while you were out"])
    [(_by, uid)] = stanza_ids(offline)
    result = await bob.plugin["xep_0313"].retrieve(rsm={"max": 10})
    [archived] = result["mam"]["results"]
    assert (archived["mam_result"]["id"], forwarded_body(archived)) == (uid, "while you were out")
