"""Message Carbons (XEP-0280) with slixmpp over real sockets."""

from __future__ import annotations

from typing import Any, Callable
from xml.etree import ElementTree as ET

from support.xmpp_clients import CLIENT, ClientPool, TestClient, asyncio_test, is_chat, stanza_text

NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_SID = "urn:xmpp:sid:0"


async def carbons_client(pool: ClientPool, user: str, resource: str, *, enable: bool = True,
                         priority: int = 0) -> TestClient:
    """A logged-in, available client with slixmpp's carbons plugin, carbons enabled."""
    client = pool.new(user, resource=resource)
    for plugin in ("xep_0030", "xep_0297", "xep_0280"):
        client.register_plugin(plugin)
    await client.login(pool.server.c2s_port)
    if enable:
        await client.plugin["xep_0280"].enable(timeout=5)
    client.send_presence(ppriority=priority)
    await client.ping_server()
    return client


def is_carbon(direction: str, body: str) -> Callable[[Any], bool]:
    path = f"{{{NS_CARBONS}}}{direction}/{{{NS_FORWARD}}}forwarded/{{{CLIENT}}}message/{{{CLIENT}}}body"
    return lambda stanza: stanza_text(stanza, path) == body


def forwarded(stanza: Any, direction: str) -> Any:
    return stanza.xml.find(f"{{{NS_CARBONS}}}{direction}/{{{NS_FORWARD}}}forwarded/{{{CLIENT}}}message")


def no_carbons(client: TestClient) -> bool:
    return not [m for m in client.messages.items if m.xml.find(f"{{{NS_CARBONS}}}received") is not None
                or m.xml.find(f"{{{NS_CARBONS}}}sent") is not None]


@asyncio_test
async def test_carbon_copies_arrive_on_the_second_resource(clients: ClientPool) -> None:
    """bob writes to alice's phone: her laptop gets a <received/> copy; alice answers from the
    phone: the laptop gets a <sent/> copy carrying her archive's stanza-id; the phone gets
    no copy of either."""
    phone = await carbons_client(clients, "alice", "phone")
    laptop = await carbons_client(clients, "alice", "laptop")
    bob = await carbons_client(clients, "bob", "desk", enable=False)

    received_events: list[Any] = []
    laptop.add_event_handler("carbon_received", received_events.append)

    bob.send_message(mto="alice@localhost/phone", mbody="hello phone", mtype="chat")
    await phone.messages.wait_for(is_chat("hello phone"), what="the original")
    copy = await laptop.messages.wait_for(is_carbon("received", "hello phone"), what="a received carbon")
    assert (copy["from"], copy["to"], copy["type"]) == ("alice@localhost", "alice@localhost/laptop", "chat")
    inner = forwarded(copy, "received")
    assert (inner.get("from"), inner.get("to")) == ("bob@localhost/desk", "alice@localhost/phone")
    assert received_events and received_events[0]["carbon_received"]["body"] == "hello phone"

    phone.send_message(mto="bob@localhost", mbody="hi bob", mtype="chat")
    await bob.messages.wait_for(is_chat("hi bob"), what="alice's answer")
    copy = await laptop.messages.wait_for(is_carbon("sent", "hi bob"), what="a sent carbon")
    inner = forwarded(copy, "sent")
    assert (inner.get("from"), inner.get("to")) == ("alice@localhost/phone", "bob@localhost")
    assert [e.get("by") for e in inner.findall(f"{{{NS_SID}}}stanza-id")] == ["alice@localhost"]
    await phone.ping_server()
    assert no_carbons(phone)


@asyncio_test
async def test_private_messages_and_disabled_resources_get_no_copies(clients: ClientPool) -> None:
    """<private/> keeps a message off the other resources; a resource that disabled carbons
    gets nothing."""
    phone = await carbons_client(clients, "alice", "phone")
    laptop = await carbons_client(clients, "alice", "laptop")
    tablet = await carbons_client(clients, "alice", "tablet")
    bob = await carbons_client(clients, "bob", "desk", enable=False)
    await tablet.plugin["xep_0280"].disable(timeout=5)

    message = phone.make_message(mto="bob@localhost", mbody="just between us", mtype="chat")
    message.enable("carbon_private")
    ET.SubElement(message.xml, "{urn:xmpp:hints}no-copy")
    message.send()
    got = await bob.messages.wait_for(is_chat("just between us"), what="the private message")
    assert got.xml.find(f"{{{NS_CARBONS}}}private") is not None, "delivered as sent"

    bob.send_message(mto="alice@localhost/phone", mbody="to the phone", mtype="chat")
    await phone.messages.wait_for(is_chat("to the phone"), what="the original")
    await laptop.messages.wait_for(is_carbon("received", "to the phone"), what="a received carbon")
    for client in (laptop, tablet):
        await client.ping_server()
    assert not [m for m in laptop.messages.items if is_carbon("sent", "just between us")(m)]
    assert no_carbons(tablet)
