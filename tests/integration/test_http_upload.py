"""XEP-0363 HTTP File Upload: slixmpp's xep_0363 against the upload component and the Site."""

from __future__ import annotations

import asyncio
import io
import urllib.error
import urllib.request
from typing import Any

import pytest

from support.server import free_port
from support.xmpp_clients import ClientPool, asyncio_test, client_ssl_context

HTTP_PORT = free_port()


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    return {"http": {"enabled": True, "interface": "127.0.0.1", "port": HTTP_PORT, "tls_port": free_port(),
                     "public_url": f"http://127.0.0.1:{HTTP_PORT}",
                     "upload": {"max_file_size": 100000, "quota_per_user": 150000}}}


def _get(url: str, context: Any = None) -> tuple[int, bytes, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def _put(url: str, data: bytes, content_type: str) -> int:
    request = urllib.request.Request(url, data=data, method="PUT", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


async def upload_client(pool: ClientPool, user: str) -> Any:
    client = pool.new(user)
    for plugin in ("xep_0030", "xep_0363"):
        client.register_plugin(plugin)
    await client.login(pool.server.c2s_port)
    return client


@asyncio_test
async def test_slixmpp_uploads_and_the_get_returns_the_bytes(xmpp_server: Any, clients: ClientPool) -> None:
    from slixmpp.plugins.xep_0363.http_upload import FileTooBig

    alice = await upload_client(clients, "alice")
    payload = bytes(range(256)) * 200
    url = await alice.plugin["xep_0363"].upload_file("../../photo 1.png", size=len(payload),
                                                    content_type="image/png", input_file=io.BytesIO(payload),
                                                    timeout=10)   # found through the server's disco#items
    assert url.startswith(f"http://127.0.0.1:{HTTP_PORT}/upload/")
    assert url.endswith("/photo%201.png")
    assert alice.plugin["xep_0363"].max_file_size == 100000
    status, body, headers = await asyncio.to_thread(_get, url)
    assert status == 200 and body == payload
    assert headers["content-type"] == "image/png"
    assert headers["content-disposition"] == "inline; filename*=UTF-8''photo%201.png"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["access-control-allow-origin"] == "*"
    # Over HTTPS as well (the server certificate).
    https = xmpp_server.service.listener("https").port.getHost().port
    tls_url = url.replace(f"http://127.0.0.1:{HTTP_PORT}", f"https://localhost:{https}")
    status, body, _ = await asyncio.to_thread(_get, tls_url, client_ssl_context(xmpp_server.certificate_path))
    assert status == 200 and body == payload

    # Too large: the service says file-too-large with the limit (slixmpp checks the form
    # first; the raw request shows the server's answer).
    with pytest.raises(FileTooBig):
        await alice.plugin["xep_0363"].upload_file("big.bin", size=200000, input_file=io.BytesIO(b"x"),
                                                   domain="upload.localhost", timeout=10)
    iq = alice.make_iq_get(ito="upload.localhost")
    request = iq["http_upload_request"]
    request["filename"], request["size"], request["content-type"] = "big.bin", "200000", "text/plain"
    from slixmpp.exceptions import IqError

    with pytest.raises(IqError) as info:
        await iq.send(timeout=10)
    error = info.value.iq["error"]
    assert error["condition"] == "not-acceptable" and error["type"] == "modify"
    too_large = error.xml.find("{urn:xmpp:http:upload:0}file-too-large/{urn:xmpp:http:upload:0}max-file-size")
    assert too_large is not None and too_large.text == "100000"

    # The quota: 51200 stored, 99999 more would pass 150000.
    iq = alice.make_iq_get(ito="upload.localhost")
    request = iq["http_upload_request"]
    request["filename"], request["size"], request["content-type"] = "more.bin", "99999", "text/plain"
    with pytest.raises(IqError) as info:
        await iq.send(timeout=10)
    assert info.value.iq["error"]["condition"] == "resource-constraint"


@asyncio_test
async def test_put_checks_signature_size_type_and_reuse(xmpp_server: Any, clients: ClientPool) -> None:
    alice = await upload_client(clients, "alice")
    slot_iq = await alice.plugin["xep_0363"].request_slot("upload.localhost", "notes.txt", 5, "text/plain",
                                                         timeout=10)
    put = slot_iq["http_upload_slot"]["put"]["url"]
    get = slot_iq["http_upload_slot"]["get"]["url"]
    assert await asyncio.to_thread(_put, put.replace("sig=", "sig=0"), b"hello", "text/plain") == 403
    assert await asyncio.to_thread(_put, put.replace("size=5", "size=6"), b"hello!", "text/plain") == 403
    assert await asyncio.to_thread(_put, put, b"hello!", "text/plain") == 400
    assert await asyncio.to_thread(_put, put, b"hello", "text/html") == 400
    assert (await asyncio.to_thread(_get, get))[0] == 404
    assert await asyncio.to_thread(_put, put, b"hello", "text/plain") == 201
    assert await asyncio.to_thread(_put, put, b"HELLO", "text/plain") == 409
    status, body, headers = await asyncio.to_thread(_get, get)
    assert (status, body) == (200, b"hello")
    assert headers["content-disposition"].startswith("attachment;")
    # No way out of the storage folder, and the name must match.
    base = get.rsplit("/", 2)[0]
    for path in ("/../upload.secret", "/..%2F..%2Fupload.secret", "/" + get.rsplit("/", 2)[1] + "/other.txt"):
        assert (await asyncio.to_thread(_get, base + path))[0] == 404
    # A slot request from another server's user is refused by the component; disco shows the form.
    info = await alice.plugin["xep_0030"].get_info("upload.localhost", timeout=10)
    assert ("store", "file", None, "HTTP File Upload") in info["disco_info"]["identities"]
    assert "urn:xmpp:http:upload:0" in info["disco_info"]["features"]
