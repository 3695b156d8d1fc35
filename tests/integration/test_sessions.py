"""Sessions over real sockets: offline delivery, resource conflicts, stanza size limits and
malformed input, each checked to hurt only the stream concerned."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import pytest

from support.raw_xmpp import RawXmppClient, StreamClosed
from support.server import RunningServer, extension_available
from support.xmpp_clients import (
    CLIENT, DELAY, ClientPool, TestClient, asyncio_test, from_deferred, is_chat, stanza_text,
)

SIZE_LIMIT = 10000  # the smallest c2s.stanza_size_limit_bytes the config accepts

needs_presence = pytest.mark.skipif(not extension_available("presence"),
                                    reason="offline delivery happens at initial presence (presence extension)")


async def chat_works(sender: TestClient, receiver: TestClient, body: str) -> None:
    """``sender`` sends a chat message to ``receiver``'s full JID and it arrives."""
    sender.send_message(mto=receiver.boundjid.full, mbody=body, mtype="chat")
    got = await receiver.messages.wait_for(is_chat(body), what=f"message {body!r}")
    assert got.xml.get("from") == sender.boundjid.full


async def nothing_arrived(receiver: TestClient, body: str, *senders: TestClient) -> None:
    """After a ping round trip of every sender and then the receiver, ``body`` did not arrive.

    The server handles a stream's input in order and writes synchronously, so anything
    the senders caused before their ping was answered has reached the receiver's socket
    before the receiver's own ping is answered.
    """
    for sender in senders:
        await sender.ping_server()
    await receiver.ping_server()
    assert receiver.messages.take(is_chat(body)) is None, f"{body!r} was delivered"


# -- offline messages -----------------------------------------------------------------------

@needs_presence
@asyncio_test
async def test_message_to_logged_out_user_is_delivered_with_delay_stamp_at_next_login(
        clients: ClientPool) -> None:
    """A chat message to bob while he is logged out is stored and delivered once, with a
    XEP-0203 <delay/> from the server, when he next sends initial presence."""
    bob = await clients.login("bob", resource="first", available=True)
    await bob.close()
    alice = await clients.login("alice", resource="a", available=True)
    before = datetime.now(timezone.utc)
    alice.send_message(mto="bob@localhost", mbody="while you were out", mtype="chat")
    await alice.ping_server()
    assert not alice.messages.items, f"the sender got an error: {alice.messages.items}"

    bob = await clients.login("bob", resource="second")
    await bob.ping_server()
    assert bob.messages.take(is_chat("while you were out")) is None, "delivered before initial presence"
    bob.send_presence()
    got = await bob.messages.wait_for(is_chat("while you were out"), what="the offline message")
    assert got.xml.get("from") == "alice@localhost/a"
    delay = got.xml.find(f"{{{DELAY}}}delay")
    assert delay is not None, "no urn:xmpp:delay stamp"
    assert delay.get("from") == "localhost"
    stamp = datetime.strptime(delay.get("stamp"), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs((stamp - before).total_seconds()) < 10

    # delivered means deleted: the next login gets only what came later (stored in order,
    # flushed in order, so the marker proves the old message is not coming)
    await bob.close()
    alice.send_message(mto="bob@localhost", mbody="marker", mtype="chat")
    again = await clients.login("bob", resource="third", available=True)
    first = await again.messages.wait_for(what="the next offline message")
    assert stanza_text(first, f"{{{CLIENT}}}body") == "marker", "an offline message was delivered twice"


def is_error(condition: str):
    """Predicate: an error stanza with this defined condition."""
    return lambda stanza: stanza.xml.get("type") == "error" and stanza.xml.find(
        f"{{{CLIENT}}}error/{{urn:ietf:params:xml:ns:xmpp-stanzas}}{condition}") is not None


@needs_presence
@pytest.mark.parametrize("server_overrides", [{"extensions": {"offline": {"max_per_user": 2}}}])
@asyncio_test
async def test_offline_quota_holds_for_a_pipelined_burst(clients: ClientPool) -> None:
    """Five messages written at once to an offline user with a quota of two: two are kept,
    three bounce with <service-unavailable/>, and only two are delivered at login."""
    alice = await clients.login("alice", resource="a", available=True)
    for i in range(5):
        alice.send_message(mto="bob@localhost", mbody=f"offline {i}", mtype="chat")
    for _ in range(3):
        await alice.messages.wait_for(is_error("service-unavailable"), timeout=3, what="a quota bounce")
    bob = await clients.login("bob", resource="b", available=True)
    got = [stanza_text(await bob.messages.wait_for(what="an offline message"), f"{{{CLIENT}}}body")
           for _ in range(2)]
    assert got == ["offline 0", "offline 1"]


@asyncio_test
async def test_message_to_unknown_user_bounces_with_service_unavailable(clients: ClientPool) -> None:
    """A message to an account that does not exist is answered with a service-unavailable error."""
    alice = await clients.login("alice", resource="a", available=True)
    alice.send_message(mto="nobody@localhost", mbody="anyone?", mtype="chat")
    error = await alice.messages.wait_for(lambda m: m.xml.get("type") == "error", what="an error bounce")
    assert error.xml.find("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable") \
        is not None


# -- resource conflict ----------------------------------------------------------------------

@asyncio_test
async def test_second_login_with_the_same_resource_replaces_the_first(clients: ClientPool) -> None:
    """A new session binding alice/phone ends the old one with a <conflict/> stream error;
    the new one gets the stanzas for alice/phone."""
    old = await clients.login("alice", resource="phone", available=True)
    bob = await clients.login("bob", resource="b", available=True)
    new = await clients.login("alice", resource="phone")
    assert await old.stream_errors.wait_for(what="a stream error") == "conflict"
    await old.wait_disconnected()
    assert new.boundjid.full == "alice@localhost/phone"

    sessions = clients.server.sessions_of("alice")
    assert [s.resource for s in sessions] == ["phone"]
    await chat_works(bob, new, "to the new phone")
    assert old.messages.take(is_chat("to the new phone")) is None


@asyncio_test
async def test_different_resources_of_one_account_coexist(clients: ClientPool) -> None:
    """Two resources of one account are both bound and reachable by full JID."""
    phone = await clients.login("alice", resource="phone")
    laptop = await clients.login("alice", resource="laptop")
    bob = await clients.login("bob", resource="b")
    await chat_works(bob, phone, "to the phone")
    await chat_works(bob, laptop, "to the laptop")
    assert sorted(s.resource for s in clients.server.sessions_of("alice")) == ["laptop", "phone"]
    assert phone.stream_errors.items == [] and laptop.stream_errors.items == []


def _bind(server: RunningServer, user: str, password: str, resources: list[str]) -> list[tuple[str, str]]:
    """Bind each resource on its own connection; (type, jid or error condition) per bind."""
    out = []
    connections = []
    try:
        for resource in resources:
            client = RawXmppClient(server.c2s_port, domain=server.domain, cafile=server.certificate_path)
            connections.append(client)
            client.open()
            client.starttls()
            client.auth_plain(user, password)
            client.send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                        f"<resource>{resource}</resource></bind></iq>")
            reply = client.expect("iq")
            if reply.get("type") == "result":
                jid = reply.find("{urn:ietf:params:xml:ns:xmpp-bind}bind/{urn:ietf:params:xml:ns:xmpp-bind}jid")
                out.append(("result", jid.text if jid is not None else ""))
            else:
                error = reply.find(f"{{{CLIENT}}}error")
                condition = next(c.tag.split("}", 1)[1] for c in error if "xmpp-stanzas" in c.tag
                                 and not c.tag.endswith("}text"))
                out.append((f"error/{error.get('type')}", condition))
        return out
    finally:
        for client in connections:
            client.close()


@pytest.mark.parametrize("server_overrides", [{"c2s": {"max_resources_per_account": 2}}])
@asyncio_test
async def test_binding_beyond_max_resources_is_refused_with_resource_constraint(
        xmpp_server: RunningServer, accounts: dict[str, str]) -> None:
    """With c2s.max_resources_per_account = 2 a third resource gets a wait/resource-constraint
    error to its bind (RFC 6120 7.6.2.1); the first two stay bound."""
    results = await asyncio.to_thread(_bind, xmpp_server, "carol", accounts["carol"], ["1", "2", "3"])
    assert results == [("result", "carol@localhost/1"), ("result", "carol@localhost/2"),
                       ("error/wait", "resource-constraint")]


@asyncio_test
async def test_empty_resource_gets_a_server_generated_one(xmpp_server: RunningServer,
                                                         accounts: dict[str, str]) -> None:
    """Binding without a resource (or an all-whitespace one) yields a server-generated resource."""
    results = await asyncio.to_thread(_bind, xmpp_server, "carol", accounts["carol"], ["", "   "])
    for kind, jid in results:
        assert kind == "result" and jid.startswith("carol@localhost/") and len(jid) > len("carol@localhost/")
    assert results[0][1] != results[1][1]


@asyncio_test
async def test_resource_of_1023_octets_is_accepted(xmpp_server: RunningServer, accounts: dict[str, str]) -> None:
    """The longest resourcepart RFC 7622 3.4 allows (1023 octets) can be bound."""
    [(kind, jid)] = await asyncio.to_thread(_bind, xmpp_server, "carol", accounts["carol"], ["r" * 1023])
    assert kind == "result" and jid == "carol@localhost/" + "r" * 1023


@pytest.mark.parametrize("resource", ["r" * 1024, "\u00e9" * 512], ids=["1024-ascii", "1024-octets-utf8"])
@asyncio_test
async def test_resource_longer_than_1023_octets_is_refused(xmpp_server: RunningServer,
                                                          accounts: dict[str, str], resource: str) -> None:
    """A resourcepart over 1023 octets (RFC 7622 3.4) gets modify/bad-request (RFC 6120 7.7.2.1)."""
    [(kind, condition)] = await asyncio.to_thread(_bind, xmpp_server, "carol", accounts["carol"], [resource])
    assert (kind, condition) == ("error/modify", "bad-request")


# -- stanza size limit ----------------------------------------------------------------------

@pytest.mark.parametrize("server_overrides", [{"c2s": {"stanza_size_limit_bytes": SIZE_LIMIT}}])
@asyncio_test
async def test_oversized_stanza_closes_only_the_sender_stream_with_policy_violation(
        clients: ClientPool) -> None:
    """A stanza above c2s.stanza_size_limit_bytes ends the sender's stream with
    <policy-violation/> and is not delivered; a stanza just under the limit is; other
    users keep chatting."""
    alice = await clients.login("alice", resource="a")
    bob = await clients.login("bob", resource="b")
    carol = await clients.login("carol", resource="c")

    near_limit = "n" * (SIZE_LIMIT - 500)
    carol.send_message(mto=bob.boundjid.full, mbody=near_limit, mtype="chat")
    await bob.messages.wait_for(is_chat(near_limit), what="the stanza under the limit")

    too_big = "x" * (SIZE_LIMIT * 2)
    alice.send_message(mto=bob.boundjid.full, mbody=too_big, mtype="chat")
    assert await alice.stream_errors.wait_for(what="a stream error") == "policy-violation"
    await alice.wait_disconnected()
    await nothing_arrived(bob, too_big, carol)
    assert clients.server.sessions_of("alice") == []

    await chat_works(bob, carol, "still here")
    await chat_works(carol, bob, "me too")


def _oversized_before_auth(server: RunningServer) -> StreamClosed:
    client = RawXmppClient(server.c2s_port, domain=server.domain, cafile=server.certificate_path)
    try:
        client.open()
        # never closed: the server must not wait for the end of the element
        client.send("<iq type='get' id='big'><query xmlns='jabber:iq:version'>" + "A" * (SIZE_LIMIT * 3))
        return client.read_until_closed()
    finally:
        client.close()


@pytest.mark.parametrize("server_overrides", [{"c2s": {"stanza_size_limit_bytes": SIZE_LIMIT}}])
@asyncio_test
async def test_oversized_unfinished_element_before_auth_is_cut_off(clients: ClientPool,
                                                                  xmpp_server: RunningServer) -> None:
    """An unauthenticated peer streaming an endless element is cut off with
    <policy-violation/> once it passes the limit; logged-in users are unaffected."""
    alice = await clients.login("alice", resource="a")
    bob = await clients.login("bob", resource="b")
    closed = await asyncio.to_thread(_oversized_before_auth, xmpp_server)
    assert closed.error == "policy-violation"
    await chat_works(alice, bob, "unaffected")


# -- malformed XML ------------------------------------------------------------------------------

MALFORMED = [
    pytest.param("<message to='bob@localhost'><body>broken</message>", "not-well-formed", id="mismatched-tag"),
    pytest.param("<foo:bar/>", "not-well-formed", id="unbound-prefix"),
    pytest.param(b"<message><body>\xff\xfe</body></message>", "not-well-formed", id="invalid-utf8"),
    pytest.param("<!-- a comment -->", "restricted-xml", id="comment"),
    pytest.param("<?pi data?>", "restricted-xml", id="processing-instruction"),
    pytest.param("<message><body>&entity;</body></message>", "not-well-formed", id="undefined-entity"),
]


def _raw_login(server: RunningServer, password: str) -> RawXmppClient:
    client = RawXmppClient(server.c2s_port, domain=server.domain, cafile=server.certificate_path)
    client.login("alice", password, resource="raw")
    return client


def _send_and_wait_close(client: RawXmppClient, payload: bytes | str) -> StreamClosed:
    try:
        client.send(payload)
        closed = client.read_until_closed()
        client.wait_connection_closed()
        return closed
    finally:
        client.close()


@pytest.mark.parametrize("payload,condition", MALFORMED)
@asyncio_test
async def test_malformed_xml_after_login_closes_only_that_stream(
        clients: ClientPool, xmpp_server: RunningServer, accounts: dict[str, str],
        payload: Any, condition: str) -> None:
    """Bad XML from a logged-in client ends its stream with the RFC 6120 condition and
    unbinds its session; bob and carol keep chatting."""
    bob = await clients.login("bob", resource="b")
    carol = await clients.login("carol", resource="c")
    raw = await asyncio.to_thread(_raw_login, xmpp_server, accounts["alice"])
    assert [s.resource for s in xmpp_server.sessions_of("alice")] == ["raw"]

    closed = await asyncio.to_thread(_send_and_wait_close, raw, payload)
    assert closed.error == condition
    assert xmpp_server.sessions_of("alice") == []
    await nothing_arrived(bob, "broken", carol)
    await chat_works(bob, carol, "after the bad XML")
    await chat_works(carol, bob, "all good")


def _garbage_before_auth(server: RunningServer, garbage: bytes) -> StreamClosed:
    client = RawXmppClient(server.c2s_port, domain=server.domain, cafile=server.certificate_path)
    try:
        client.send(garbage)
        return client.read_until_closed()
    finally:
        client.close()


@pytest.mark.parametrize("garbage,condition", [
    (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", "not-well-formed"),
    (b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
     b"to='localhost' version='1.0'><<<>>>", "not-well-formed"),
    (b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]><stream:stream/>", "restricted-xml"),
])
@asyncio_test
async def test_garbage_before_auth_closes_only_that_connection(clients: ClientPool, xmpp_server: RunningServer,
                                                                garbage: bytes, condition: str) -> None:
    """Non-XMPP or malformed bytes on a fresh connection get a stream error and a close;
    connected users are unaffected."""
    alice = await clients.login("alice", resource="a")
    bob = await clients.login("bob", resource="b")
    closed = await asyncio.to_thread(_garbage_before_auth, xmpp_server, garbage)
    assert closed.error == condition
    await chat_works(alice, bob, "unaffected by garbage")


def _wrong_namespace_stream(server: RunningServer) -> StreamClosed:
    client = RawXmppClient(server.c2s_port, domain=server.domain)
    try:
        client.send("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
                    "to='localhost' version='1.0'>")
        return client.read_until_closed()
    finally:
        client.close()


@asyncio_test
async def test_stream_in_the_server_namespace_is_refused(xmpp_server: RunningServer) -> None:
    """The c2s port serves jabber:client only: a jabber:server stream gets <invalid-namespace/>."""
    closed = await asyncio.to_thread(_wrong_namespace_stream, xmpp_server)
    assert closed.error == "invalid-namespace"


def _unknown_host(server: RunningServer) -> StreamClosed:
    client = RawXmppClient(server.c2s_port, domain="example.net")
    try:
        client.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                    "to='example.net' version='1.0'>")
        return client.read_until_closed()
    finally:
        client.close()


@asyncio_test
async def test_stream_to_a_domain_not_hosted_gets_host_unknown(xmpp_server: RunningServer) -> None:
    """A stream header naming a domain the server does not host gets <host-unknown/>."""
    closed = await asyncio.to_thread(_unknown_host, xmpp_server)
    assert closed.error == "host-unknown"


def _spoofed_from(server: RunningServer, password: str) -> StreamClosed:
    client = _raw_login(server, password)
    try:
        client.send("<message from='bob@localhost/b' to='carol@localhost'><body>spoof</body></message>")
        return client.read_until_closed()
    finally:
        client.close()


@asyncio_test
async def test_spoofed_from_address_ends_the_stream_with_invalid_from(
        clients: ClientPool, xmpp_server: RunningServer, accounts: dict[str, str]) -> None:
    """A stanza claiming another user's JID as 'from' is never delivered: the stream ends
    with <invalid-from/>."""
    carol = await clients.login("carol", resource="c")
    closed = await asyncio.to_thread(_spoofed_from, xmpp_server, accounts["alice"])
    assert closed.error == "invalid-from"
    await carol.ping_server()
    assert carol.messages.take(is_chat("spoof")) is None


@asyncio_test
async def test_server_shutdown_ends_client_streams_with_system_shutdown(clients: ClientPool) -> None:
    """Stopping the service sends every connected client <system-shutdown/> and closes it."""
    alice = await clients.login("alice", resource="a")
    bob = await clients.login("bob", resource="b")
    await from_deferred(clients.server.stop())
    for client in (alice, bob):
        assert await client.stream_errors.wait_for(what="a stream error") == "system-shutdown"
        await client.wait_disconnected()
