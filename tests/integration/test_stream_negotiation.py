"""Stream negotiation details over real sockets: ALPN, STARTTLS misuse, versions, keepalives."""

from __future__ import annotations

import asyncio
import time

import pytest
from OpenSSL import SSL

from support.raw_xmpp import TLS_NS, RawXmppClient, StreamClosed, tag
from support.server import RunningServer
from support.xmpp_clients import asyncio_test


def _direct_tls_with_alpn(server: RunningServer, alpn: tuple[bytes, ...]) -> str:
    try:
        client = RawXmppClient(server.direct_tls_port, domain=server.domain, cafile=server.certificate_path,
                               direct_tls=True, alpn=alpn)
    except (StreamClosed, SSL.Error):
        return "handshake refused"
    try:
        assert client.tls is not None
        return (client.tls.get_alpn_proto_negotiated() or b"").decode() or "no alpn"
    finally:
        client.close()


@pytest.mark.parametrize("alpn,outcome", [
    ((b"xmpp-client",), "xmpp-client"),
    ((b"h2", b"xmpp-client"), "xmpp-client"),
    ((), "no alpn"),
])
@asyncio_test
async def test_direct_tls_alpn_selection(xmpp_server: RunningServer, alpn: tuple[bytes, ...],
                                         outcome: str) -> None:
    """The direct TLS port selects 'xmpp-client' when offered (XEP-0368) and accepts
    clients that offer no ALPN at all."""
    assert await asyncio.to_thread(_direct_tls_with_alpn, xmpp_server, alpn) == outcome


@pytest.mark.parametrize("alpn", [(b"h2",), (b"xmpp-server",)], ids=["h2", "xmpp-server"])
@asyncio_test
async def test_direct_tls_refuses_a_client_whose_alpn_excludes_xmpp_client(
        xmpp_server: RunningServer, alpn: tuple[bytes, ...]) -> None:
    """A client offering ALPN without 'xmpp-client' (a browser, an s2s peer) gets the
    RFC 7301 3.2 no_application_protocol alert: no cross-protocol use of our port."""
    assert await asyncio.to_thread(_direct_tls_with_alpn, xmpp_server, alpn) == "handshake refused"


def _starttls_on_direct_tls(server: RunningServer) -> tuple[bool, str]:
    client = RawXmppClient(server.direct_tls_port, domain=server.domain, cafile=server.certificate_path,
                           direct_tls=True)
    try:
        features = client.open()
        offered = features.find(tag(TLS_NS, "starttls")) is not None
        client.send(f"<starttls xmlns='{TLS_NS}'/>")
        reply = client.read_element()
        return offered, reply.tag
    finally:
        client.close()


@asyncio_test
async def test_starttls_on_an_encrypted_stream_fails(xmpp_server: RunningServer) -> None:
    """On the direct TLS port STARTTLS is not offered, and asking for it anyway gets <failure/>."""
    offered, reply = await asyncio.to_thread(_starttls_on_direct_tls, xmpp_server)
    assert not offered
    assert reply == tag(TLS_NS, "failure")


def _header(server: RunningServer, version_attribute: str) -> str:
    client = RawXmppClient(server.c2s_port, domain=server.domain)
    try:
        client.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                    f"to='localhost' {version_attribute}>")
        try:
            client.read_element()
            return "features"
        except StreamClosed as closed:
            return f"closed:{closed.error}"
    finally:
        client.close()


@pytest.mark.parametrize("version_attribute,outcome", [
    ("version='1.0'", "features"),
    ("", "closed:unsupported-version"),
    ("version='0.9'", "closed:unsupported-version"),
])
@asyncio_test
async def test_stream_version_is_checked(xmpp_server: RunningServer, version_attribute: str,
                                         outcome: str) -> None:
    """XMPP 1.0 streams get features; pre-1.0 streams (no version, 0.9) get <unsupported-version/>."""
    assert await asyncio.to_thread(_header, xmpp_server, version_attribute) == outcome


def _whitespace_keepalive(server: RunningServer, password: str, seconds: float) -> str:
    client = RawXmppClient(server.c2s_port, domain=server.domain, cafile=server.certificate_path)
    try:
        client.login("alice", password)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            client.send(" ")
            time.sleep(0.3)
        return client.ping().get("type", "")
    finally:
        client.close()


@pytest.mark.parametrize("server_overrides", [{"c2s": {"idle_timeout_s": 1}}])
@asyncio_test
async def test_whitespace_keepalive_keeps_an_idle_session_open(xmpp_server: RunningServer,
                                                               accounts: dict[str, str]) -> None:
    """Whitespace pings (RFC 6120 4.6.1) count as activity: a session sending only spaces
    for longer than c2s.idle_timeout_s stays open."""
    assert await asyncio.to_thread(_whitespace_keepalive, xmpp_server, accounts["alice"], 1.6) == "result"
