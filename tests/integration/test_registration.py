"""In-band registration (XEP-0077) over real sockets, with slixmpp and by hand."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from support.raw_xmpp import RawXmppClient, StreamClosed, as_text, tag
from support.server import RunningServer
from support.xmpp_clients import ClientPool, LoginFailed, TestClient, asyncio_test

REGISTER = "jabber:iq:register"
REGISTER_FEATURE = "http://jabber.org/features/iq-register"

pytestmark = pytest.mark.parametrize("server_overrides", [{"extensions": {"register": {"enabled": True}}}])


def registering_client(pool: ClientPool, user: str, password: str, outcome: list[Any]) -> TestClient:
    """A slixmpp client that registers ``user`` in-band when the server offers it, then logs in."""
    client = pool.new(user, password)
    client.register_plugin("xep_0077")

    async def register(_form: Any) -> None:
        iq = client.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = user
        iq["register"]["password"] = password
        try:
            await iq.send(timeout=5)
            outcome.append("registered")
        except IqError as e:
            outcome.append(e.iq["error"]["condition"])
            client.disconnect()

    client.add_event_handler("register", register)
    return client


@asyncio_test
async def test_new_account_registers_in_band_and_logs_in(clients: ClientPool) -> None:
    """slixmpp sees the register feature after STARTTLS, creates dave, and logs in as dave."""
    outcome: list[Any] = []
    dave = registering_client(clients, "dave", "dave-password", outcome)
    clients.server.passwords["dave@localhost"] = "dave-password"
    await dave.login(clients.server.c2s_port)
    assert outcome == ["registered"]
    assert dave.boundjid.bare == "dave@localhost"
    await dave.ping_server()

    again = clients.new("dave", resource="second", mechanism="SCRAM-SHA-1")
    await again.login(clients.server.c2s_port)


@asyncio_test
async def test_registering_a_taken_username_fails_with_conflict(clients: ClientPool) -> None:
    """Registering 'alice' again is refused with <conflict/>; alice's password is unchanged."""
    outcome: list[Any] = []
    intruder = registering_client(clients, "alice", "intruder-password", outcome)
    with pytest.raises(LoginFailed):
        await intruder.login(clients.server.c2s_port)
    assert outcome == ["conflict"]
    await clients.login("alice", resource="still-mine")


@asyncio_test
async def test_password_change_in_band(clients: ClientPool) -> None:
    """A logged-in user changes the password: the new one works and the old one fails."""
    bob = await clients.login("bob", resource="b")
    bob.register_plugin("xep_0077")
    await bob.plugin["xep_0077"].change_password("bob-new-password", timeout=5)
    new = clients.new("bob", "bob-new-password", resource="new", mechanism="SCRAM-SHA-256")
    await new.login(clients.server.c2s_port)
    old = clients.new("bob", "bob-secret-2", resource="old", mechanism="SCRAM-SHA-256")
    with pytest.raises(LoginFailed):
        await old.login(clients.server.c2s_port)


@asyncio_test
async def test_account_removal_in_band_ends_the_sessions(clients: ClientPool) -> None:
    """Removing the account answers the IQ, ends every session of it with
    <not-authorized/>, and the account can no longer log in."""
    carol = await clients.login("carol", resource="one")
    other = await clients.login("carol", resource="two")
    carol.register_plugin("xep_0077")
    await carol.plugin["xep_0077"].cancel_registration(timeout=5)
    for session in (carol, other):
        assert await session.stream_errors.wait_for(what="a stream error") == "not-authorized"
        await session.wait_disconnected()
    assert clients.server.sessions_of("carol") == []
    gone = clients.new("carol", resource="three")
    with pytest.raises(LoginFailed):
        await gone.login(clients.server.c2s_port)


def _register_before_tls(server: RunningServer) -> tuple[bool, str | None]:
    client = RawXmppClient(server.c2s_port, domain=server.domain)
    try:
        features = client.open()
        advertised = features.find(tag(REGISTER_FEATURE, "register")) is not None
        client.send(f"<iq type='set' id='reg1'><query xmlns='{REGISTER}'><username>eve</username>"
                    "<password>eve-password</password></query></iq>")
        try:
            reply = client.read_element()
            return advertised, f"reply {as_text(reply)}"
        except StreamClosed as closed:
            return advertised, closed.error
    finally:
        client.close()


@asyncio_test
async def test_registration_before_starttls_is_refused(clients: ClientPool, xmpp_server: RunningServer) -> None:
    """With TLS required, a registration IQ on the plain-text stream ends the stream with
    <policy-violation/> and creates no account."""
    _advertised, outcome = await asyncio.to_thread(_register_before_tls, xmpp_server)
    assert outcome == "policy-violation"
    eve = clients.new("eve", "eve-password", mechanism="PLAIN")
    with pytest.raises(LoginFailed):
        await eve.login(xmpp_server.c2s_port)


@asyncio_test
async def test_register_feature_is_not_advertised_before_starttls(xmpp_server: RunningServer) -> None:
    """While TLS is mandatory-to-negotiate only STARTTLS is offered in the first features."""
    advertised, _outcome = await asyncio.to_thread(_register_before_tls, xmpp_server)
    assert not advertised
