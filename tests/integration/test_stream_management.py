"""XEP-0198 Stream Management over real sockets with slixmpp's xep_0198 plugin: a message
sent while the receiver's TCP connection was cut arrives after resumption, or from offline
storage once the resumption timeout ended the session; an IQ to the lost resource is
answered with an error, never dropped."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from support.server import LOOPBACK, RunningServer, extension_available
from support.xmpp_clients import (
    DEFAULT_TIMEOUT, DELAY, ClientPool, TestClient, asyncio_test, is_chat,
)
from tigasepy.c2s.stream_management import DetachedSession

SM = "urn:xmpp:sm:3"

needs_presence = pytest.mark.skipif(not extension_available("presence"),
                                    reason="offline delivery happens at initial presence (presence extension)")


def with_sm(client: TestClient) -> TestClient:
    """Give ``client`` slixmpp's XEP-0198 plugin (asking for resumption), recording its events."""
    client.register_plugin("xep_0198")
    client.plugin["xep_0198"].window = 1000   # the test decides when acks happen
    loop = asyncio.get_running_loop()
    client.sm_enabled = loop.create_future()
    client.sm_resumed = loop.create_future()
    client.sm_failed = loop.create_future()
    for event, name in (("sm_enabled", "sm_enabled"), ("session_resumed", "sm_resumed"),
                        ("sm_failed", "sm_failed")):
        client.add_event_handler(event, lambda stanza, name=name: _settle(getattr(client, name), stanza))
    return client


def _settle(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


async def sm_login(clients: ClientPool, user: str, resource: str) -> TestClient:
    """A logged-in client with stream management enabled and initial presence sent."""
    client = with_sm(clients.new(user, resource=resource))
    await client.login(clients.server.c2s_port)
    enabled = await asyncio.wait_for(client.sm_enabled, DEFAULT_TIMEOUT)
    assert enabled["resume"] in (True, "true", "1")
    client.send_presence()
    await client.ping_server()
    return client


async def cut(server: RunningServer, client: TestClient) -> None:
    """Drop the client's TCP connection without closing the stream; wait until the server
    holds its session detached."""
    full = client.boundjid.full
    client.transport.abort()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEFAULT_TIMEOUT
    while True:
        session = server.service.sm.session(full)
        if session is not None and isinstance(session.handle, DetachedSession):
            return
        assert loop.time() < deadline, f"the server did not detach {full}: {session!r}"
        await asyncio.sleep(0.01)


def delay_of(stanza: Any) -> datetime:
    delay = stanza.xml.find(f"{{{DELAY}}}delay")
    assert delay is not None, "no urn:xmpp:delay stamp"
    assert delay.get("from") == "localhost"
    return datetime.strptime(delay.get("stamp"), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


@asyncio_test
async def test_message_sent_while_the_connection_was_cut_arrives_after_resumption(
        xmpp_server: RunningServer, clients: ClientPool) -> None:
    bob = await sm_login(clients, "bob", "phone")
    alice = await clients.login("alice", resource="desk", available=True)
    alice.send_message(mto="bob@localhost/phone", mbody="before the cut", mtype="chat")
    await bob.messages.wait_for(is_chat("before the cut"))
    sm_id = bob.plugin["xep_0198"].sm_id

    await cut(xmpp_server, bob)
    # bob stays online for his contacts: his session is still bound
    assert [s.full for s in xmpp_server.sessions_of("bob")] == ["bob@localhost/phone"]
    before = datetime.now(timezone.utc)
    alice.send_message(mto="bob@localhost/phone", mbody="while you were cut off", mtype="chat")
    alice.send_message(mto="bob@localhost", mbody="to the bare jid too", mtype="chat")
    await alice.ping_server()
    assert not alice.messages.items, f"the sender got an error: {alice.messages.items}"

    bob.connect(LOOPBACK, xmpp_server.c2s_port)
    resumed = await asyncio.wait_for(bob.sm_resumed, DEFAULT_TIMEOUT)
    assert resumed["previd"] == sm_id
    first = await bob.messages.wait_for(is_chat("while you were cut off"), what="the resent message")
    second = await bob.messages.wait_for(is_chat("to the bare jid too"), what="the resent message")
    for got in (first, second):
        assert got.xml.get("from") == "alice@localhost/desk"
        assert abs((delay_of(got) - before).total_seconds()) < 10
    assert bob.messages.take(is_chat("before the cut")) is None, "an acknowledged message came twice"
    assert not bob.sm_failed.done()
    # the resumed stream works both ways
    bob.send_message(mto="alice@localhost/desk", mbody="back", mtype="chat")
    await alice.messages.wait_for(is_chat("back"))
    session = xmpp_server.service.sm.session("bob@localhost/phone")
    assert session is not None and not isinstance(session.handle, DetachedSession)


@needs_presence
@pytest.mark.parametrize("server_overrides", [{"c2s": {"stream_management": {"resume_timeout_s": 1}}}])
@asyncio_test
async def test_after_the_resumption_timeout_the_message_comes_from_offline_storage(
        xmpp_server: RunningServer, clients: ClientPool) -> None:
    bob = await sm_login(clients, "bob", "phone")
    alice = await clients.login("alice", resource="desk", available=True)
    await cut(xmpp_server, bob)
    before = datetime.now(timezone.utc)
    alice.send_message(mto="bob@localhost/phone", mbody="kept for later", mtype="chat")
    version = alice.make_iq_get(queryxmlns="jabber:iq:version", ito="bob@localhost/phone")
    pending = asyncio.ensure_future(version.send(timeout=DEFAULT_TIMEOUT))

    # the IQ is answered with an error once the session ends, not dropped
    with pytest.raises(IqError) as error:
        await pending
    assert error.value.iq["error"]["condition"] == "service-unavailable"
    assert error.value.iq["from"] == "bob@localhost/phone"
    assert xmpp_server.sessions_of("bob") == []
    assert not alice.messages.items, f"the sender got an error: {alice.messages.items}"

    # the same client comes back: resumption fails, it binds anew and gets the message offline
    bob.connect(LOOPBACK, xmpp_server.c2s_port)
    failed = await asyncio.wait_for(bob.sm_failed, DEFAULT_TIMEOUT)
    assert failed.xml.find("{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found") is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEFAULT_TIMEOUT
    while not bob.session_started:
        assert loop.time() < deadline, "no new session after the failed resumption"
        await asyncio.sleep(0.01)
    bob.send_presence()
    got = await bob.messages.wait_for(is_chat("kept for later"), what="the offline message")
    assert got.xml.get("from") == "alice@localhost/desk"
    assert abs((delay_of(got) - before).total_seconds()) < 10
    assert len(got.xml.findall(f"{{{DELAY}}}delay")) == 1
