"""RFC 7395 XMPP over WebSocket and XEP-0156 host-meta, with real clients over 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from support.server import free_port
from support.web_clients import CLIENT, FRAMING, WsClient
from support.xmpp_clients import ClientPool, asyncio_test, client_ssl_context, is_chat


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    return {"http": {"enabled": True, "interface": "127.0.0.1", "port": free_port(), "tls_port": free_port()}}


def _urls(server: Any) -> tuple[str, str]:
    http = server.service.listener("http").port.getHost().port
    https = server.service.listener("https").port.getHost().port
    return f"ws://127.0.0.1:{http}/xmpp-websocket", f"wss://localhost:{https}/xmpp-websocket"


@asyncio_test
async def test_scram_bind_and_messages_both_ways_over_wss(xmpp_server: Any, clients: ClientPool) -> None:
    _, wss = _urls(xmpp_server)
    bob = await clients.login("bob", available=True)
    ws = WsClient(wss, "localhost", client_ssl_context(xmpp_server.certificate_path))
    await ws.connect()
    try:
        jid = await ws.login("alice", xmpp_server.passwords["alice@localhost"], "SCRAM-SHA-256")
        assert jid == "alice@localhost/web"
        await ws.send(f"<message xmlns='{CLIENT}' to='bob@localhost' type='chat'><body>hi from ws</body></message>")
        got = await bob.messages.wait_for(is_chat("hi from ws"), what="the message from the WebSocket")
        assert got["from"] == "alice@localhost/web"
        bob.send_message(mto=jid, mbody="hi back", mtype="chat")
        message = await ws.wait_for(f"{{{CLIENT}}}message")
        assert message.find(f"{{{CLIENT}}}body").text == "hi back"
        assert message.get("from") == bob.boundjid.full
        await ws.send(f"<close xmlns='{FRAMING}'/>")
        closed = await ws.wait_for(f"{{{FRAMING}}}close")
        assert closed is not None
    finally:
        await ws.close()


@asyncio_test
async def test_plain_ws_refused_when_tls_is_required(xmpp_server: Any, accounts: Any) -> None:
    ws_url, _ = _urls(xmpp_server)
    import websockets

    with pytest.raises(websockets.exceptions.InvalidStatus) as info:
        await websockets.connect(ws_url, subprotocols=["xmpp"], open_timeout=5)
    assert info.value.response.status_code == 403


@asyncio_test
async def test_subprotocol_required(xmpp_server: Any, accounts: Any) -> None:
    _, wss = _urls(xmpp_server)
    import websockets

    with pytest.raises(websockets.exceptions.InvalidStatus) as info:
        await websockets.connect(wss, ssl=client_ssl_context(xmpp_server.certificate_path), open_timeout=5)
    assert info.value.response.status_code == 400


@asyncio_test
async def test_oversized_and_malformed_frames_end_the_stream(xmpp_server: Any, accounts: Any) -> None:
    _, wss = _urls(xmpp_server)
    ws = WsClient(wss, "localhost", client_ssl_context(xmpp_server.certificate_path))
    await ws.connect()
    try:
        await ws.login("alice", xmpp_server.passwords["alice@localhost"], "SCRAM-SHA-1")
        await ws.send(f"<message xmlns='{CLIENT}' to='bob@localhost'><body>{'x' * 300000}</body></message>")
        error = await ws.wait_for("{http://etherx.jabber.org/streams}error")
        assert error.find("{urn:ietf:params:xml:ns:xmpp-streams}policy-violation") is not None
        await ws.wait_for(f"{{{FRAMING}}}close")
    finally:
        await ws.close()


@pytest.mark.parametrize("server_overrides", [
    {"http": {"enabled": True, "interface": "127.0.0.1", "port": free_port(), "tls_port": 0,
              "behind_tls_proxy": True, "public_url": "https://chat.example.org"}}])
@asyncio_test
async def test_plain_behind_a_tls_proxy_and_host_meta(xmpp_server: Any, accounts: Any) -> None:
    port = xmpp_server.service.listener("http").port.getHost().port
    ws = WsClient(f"ws://127.0.0.1:{port}/xmpp-websocket", "localhost")
    await ws.connect()
    try:
        assert await ws.login("bob", xmpp_server.passwords["bob@localhost"], "PLAIN") == "bob@localhost/web"
    finally:
        await ws.close()

    def fetch(path: str) -> tuple[str, bytes, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.headers.get("content-type"), response.read(), response.headers

    kind, body, headers = await asyncio.to_thread(fetch, "/.well-known/host-meta.json")
    assert kind == "application/json"
    assert headers.get("access-control-allow-origin") == "*"
    assert headers.get("x-content-type-options") == "nosniff"
    links = {link["rel"]: link["href"] for link in json.loads(body)["links"]}
    assert links == {"urn:xmpp:alt-connections:websocket": "wss://chat.example.org/xmpp-websocket",
                     "urn:xmpp:alt-connections:xbosh": "https://chat.example.org/http-bind"}
    kind, body, _ = await asyncio.to_thread(fetch, "/.well-known/host-meta")
    assert kind.startswith("application/xrd+xml")
    assert b"rel=\"urn:xmpp:alt-connections:websocket\" href=\"wss://chat.example.org/xmpp-websocket\"" in body

    def not_found() -> int:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing-here", timeout=5)
        except urllib.error.HTTPError as e:
            return e.code
        return 200

    assert await asyncio.to_thread(not_found) == 404


@asyncio_test
async def test_stream_management_resumes_a_websocket_session(xmpp_server: Any, clients: ClientPool) -> None:
    sm = "urn:xmpp:sm:3"
    _, wss = _urls(xmpp_server)
    context = client_ssl_context(xmpp_server.certificate_path)
    bob = await clients.login("bob", available=True)
    first = WsClient(wss, "localhost", context)
    await first.connect()
    jid = await first.login("alice", xmpp_server.passwords["alice@localhost"], "SCRAM-SHA-256")
    await first.send(f"<enable xmlns='{sm}' resume='true'/>")
    enabled = await first.wait_for(f"{{{sm}}}enabled")
    assert enabled.get("resume") == "true"
    first.ws.transport.abort()          # the connection drops without </close>
    for _ in range(50):
        if not xmpp_server.sessions_of("alice") or \
                all(type(s).__name__ == "DetachedSession" for s in xmpp_server.sessions_of("alice")):
            break
        await asyncio.sleep(0.1)
    bob.send_message(mto=jid, mbody="while you were away", mtype="chat")
    await bob.ping_server()
    second = WsClient(wss, "localhost", context)
    await second.connect()
    try:
        await second.authenticate("alice", xmpp_server.passwords["alice@localhost"])
        await second.send(f"<resume xmlns='{sm}' previd='{enabled.get('id')}' h='0'/>")
        resumed = await second.wait_for(f"{{{sm}}}resumed")
        assert resumed.get("previd") == enabled.get("id")
        message = await second.wait_for(f"{{{CLIENT}}}message")
        assert message.find(f"{{{CLIENT}}}body").text == "while you were away"
    finally:
        await second.close()
