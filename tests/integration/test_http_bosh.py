"""XEP-0124/0206 BOSH with a small urllib client in threads, next to slixmpp over TCP."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from support.server import free_port
from support.web_clients import BOSH, CLIENT, BoshClient
from support.xmpp_clients import ClientPool, asyncio_test, client_ssl_context, is_chat


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    return {"http": {"enabled": True, "interface": "127.0.0.1", "port": free_port(), "tls_port": free_port(),
                     "bosh_inactivity_s": 5}}


def _client(server: Any) -> BoshClient:
    port = server.service.listener("https").port.getHost().port
    return BoshClient(f"https://localhost:{port}/http-bind", "localhost",
                      client_ssl_context(server.certificate_path))


def _wait_message(client: BoshClient, body: str) -> ET.Element:
    for _ in range(10):
        reply = client.body()
        for message in reply.findall(f"{{{CLIENT}}}message"):
            if message.findtext(f"{{{CLIENT}}}body") == body:
                return message
    raise AssertionError("no message")


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
@asyncio_test
async def test_login_bind_and_messages_both_ways(xmpp_server: Any, clients: ClientPool, mechanism: str) -> None:
    bob = await clients.login("bob", available=True)
    bosh = _client(xmpp_server)
    jid = await asyncio.to_thread(bosh.login, "alice", xmpp_server.passwords["alice@localhost"], mechanism)
    assert jid == "alice@localhost/bosh"
    await asyncio.to_thread(bosh.body, f"<message xmlns='{CLIENT}' to='bob@localhost' type='chat'>"
                                       "<body>hi over bosh</body></message>")
    got = await bob.messages.wait_for(is_chat("hi over bosh"), what="the BOSH message")
    assert got["from"] == jid
    bob.send_message(mto=jid, mbody="hi back", mtype="chat")
    message = await asyncio.to_thread(_wait_message, bosh, "hi back")
    assert message.get("from") == bob.boundjid.full
    # A repeated rid gets the same answer again; one far ahead ends the session.
    again = await asyncio.to_thread(bosh.post, f"<body xmlns='{BOSH}' rid='{bosh.rid}' sid='{bosh.sid}'/>")
    assert again.get("type") != "terminate"
    bosh.rid += 10
    reply = await asyncio.to_thread(bosh.body)
    assert (reply.get("type"), reply.get("condition")) == ("terminate", "item-not-found")
    assert not xmpp_server.sessions_of("alice")


@asyncio_test
async def test_terminate_and_inactivity(xmpp_server: Any, accounts: Any) -> None:
    bosh = _client(xmpp_server)
    await asyncio.to_thread(bosh.login, "alice", xmpp_server.passwords["alice@localhost"])
    reply = await asyncio.to_thread(bosh.body, f"<presence xmlns='{CLIENT}' type='unavailable'/>", type="terminate")
    assert reply.get("type") == "terminate"
    assert not xmpp_server.sessions_of("alice")
    other = _client(xmpp_server)
    await asyncio.to_thread(other.login, "bob", xmpp_server.passwords["bob@localhost"])
    assert xmpp_server.sessions_of("bob")
    await asyncio.sleep(6.5)   # bosh_inactivity_s = 5, nothing held
    assert not xmpp_server.sessions_of("bob")
    reply = await asyncio.to_thread(other.body)
    assert (reply.get("type"), reply.get("condition")) == ("terminate", "item-not-found")


@asyncio_test
async def test_bad_bodies(xmpp_server: Any, accounts: Any) -> None:
    bosh = _client(xmpp_server)

    def post(data: bytes) -> int:
        request = urllib.request.Request(bosh.url, data=data, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5, context=bosh.ssl_context) as response:
                return response.status
        except urllib.error.HTTPError as e:
            return e.code

    assert await asyncio.to_thread(post, b"<body rid='1'/>") == 400
    assert await asyncio.to_thread(post, b"<!DOCTYPE x [<!ENTITY a 'b'>]><body xmlns='" + BOSH.encode()
                                   + b"' rid='1'/>") == 400
    assert await asyncio.to_thread(post, b"<body xmlns='" + BOSH.encode() + b"' rid='1' sid='nope'/>") == 200
    assert await asyncio.to_thread(post, b"<body xmlns='" + BOSH.encode() + b"' rid='1'>"
                                   + b"x" * 70000 + b"</body>") == 413
