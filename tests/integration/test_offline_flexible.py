"""Flexible offline message retrieval (XEP-0013) with slixmpp over real sockets."""

from __future__ import annotations

import asyncio

from support.xmpp_clients import ClientPool, TestClient, asyncio_test, is_chat

NS_OFFLINE = "http://jabber.org/protocol/offline"


async def flexible_client(pool: ClientPool, user: str, resource: str) -> TestClient:
    """Logged in (no presence yet), with slixmpp's XEP-0013 plugin."""
    client = pool.new(user, resource=resource)
    for plugin in ("xep_0030", "xep_0013"):
        client.register_plugin(plugin)
    await client.login(pool.server.c2s_port)
    return client


def count_of(info: object) -> str | None:
    """number_of_messages from the XEP-0128 form of the offline node's disco#info."""
    for field in info.xml.iter("{jabber:x:data}field"):
        if field.get("var") == "number_of_messages":
            return field.findtext("{jabber:x:data}value")
    return None


def results(iq: object) -> list:
    return list(iq["offline"]["results"])


@asyncio_test
async def test_headers_first_then_no_flood_then_view_remove_and_purge(clients: ClientPool) -> None:
    """bob asks for the count and headers before his presence: no flood follows; he views
    one message, removes it, fetches the rest, and purges."""
    alice = await clients.login("alice", resource="a")
    for n in range(3):
        alice.send_message(mto="bob@localhost", mbody=f"offline {n}", mtype="chat")
    await alice.ping_server()

    bob = await flexible_client(clients, "bob", "b")
    # The ping proves the server read the messages, not that storing them has finished.
    for _ in range(50):
        info = await bob.plugin["xep_0013"].get_count(timeout=5)
        if count_of(info) == "3":
            break
        await asyncio.sleep(0.05)
    assert count_of(info) == "3"
    items = await bob.plugin["xep_0013"].get_headers(timeout=5)
    headers = items["disco_items"]["items"]             # (jid, node, name)
    assert [(jid.bare if hasattr(jid, "bare") else str(jid), name) for jid, _node, name in headers] == [
        ("bob@localhost", "alice@localhost/a")] * 3
    nodes = sorted(node for _jid, node, _name in headers)      # (slixmpp gives a set; nodes sort by time)

    bob.send_presence()
    await bob.ping_server()
    await asyncio.sleep(0.2)
    assert not [m for m in bob.messages.items if m["body"]], "no flood after the headers were asked for"

    done: asyncio.Future = asyncio.get_running_loop().create_future()
    bob.plugin["xep_0013"].view(nodes[1], timeout=5, callback=done.set_result)
    viewed = await asyncio.wait_for(done, 5)
    assert [m["body"] for m in results(viewed)] == ["offline 1"]
    assert [item.get("node") for m in results(viewed)
            for item in m.xml.iter(f"{{{NS_OFFLINE}}}item")] == [nodes[1]]

    await bob.plugin["xep_0013"].remove(nodes[1], timeout=5)
    done = asyncio.get_running_loop().create_future()
    bob.plugin["xep_0013"].fetch(timeout=5, callback=done.set_result)
    fetched = await asyncio.wait_for(done, 5)
    assert [m["body"] for m in results(fetched)] == ["offline 0", "offline 2"]

    await bob.plugin["xep_0013"].purge(timeout=5)
    info = await bob.plugin["xep_0013"].get_count(timeout=5)
    assert count_of(info) == "0"


@asyncio_test
async def test_a_plain_client_still_gets_the_flood(clients: ClientPool) -> None:
    """Without XEP-0013 requests, initial presence delivers the stored messages (XEP-0160)."""
    alice = await clients.login("alice", resource="a")
    alice.send_message(mto="bob@localhost", mbody="stored", mtype="chat")
    await alice.ping_server()
    bob = await clients.login("bob", resource="b", available=True)
    await bob.messages.wait_for(is_chat("stored"), what="the stored message")
