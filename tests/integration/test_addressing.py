"""Addressing over real sockets: IQs between clients, the server's own IQs, remote domains,
and the 'from' stamping of RFC 6120 8.1.2."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import IqError

from support.raw_xmpp import RawXmppClient
from support.server import RunningServer
from support.xmpp_clients import CLIENT, ClientPool, asyncio_test, is_chat

STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def error_condition(stanza) -> str | None:
    """The defined condition of a stanza error."""
    error = stanza.xml.find(f"{{{CLIENT}}}error")
    if error is None:
        return None
    for child in error:
        if child.tag.startswith(f"{{{STANZA_ERRORS}}}") and not child.tag.endswith("}text"):
            return child.tag.split("}", 1)[1]
    return None


@asyncio_test
async def test_iq_between_two_clients_round_trips(clients: ClientPool) -> None:
    """alice pings bob's full JID; bob's client answers and the result comes back to alice."""
    alice = await clients.login("alice", resource="a")
    bob = await clients.login("bob", resource="b")
    result = await alice.plugin["xep_0199"].send_ping(bob.boundjid.full, timeout=5)
    assert result["type"] == "result"
    assert result["from"] == bob.boundjid.full


@asyncio_test
async def test_iq_to_an_unbound_full_jid_gets_service_unavailable(clients: ClientPool) -> None:
    """An IQ get to a resource that is not bound is answered by the server with
    <service-unavailable/> (RFC 6121 8.5.3.2.2)."""
    alice = await clients.login("alice", resource="a")
    with pytest.raises(IqError) as raised:
        await alice.plugin["xep_0199"].send_ping("bob@localhost/nowhere", timeout=5)
    assert raised.value.iq["error"]["condition"] == "service-unavailable"


@asyncio_test
async def test_server_answers_disco_info_with_the_enabled_features(clients: ClientPool) -> None:
    """disco#info to the domain lists the features of the loaded extensions."""
    alice = await clients.login("alice", resource="a")
    alice.register_plugin("xep_0030")
    info = await alice.plugin["xep_0030"].get_info(jid="localhost", timeout=5)
    features = set(info["disco_info"]["features"])
    assert {"http://jabber.org/protocol/disco#info", "urn:xmpp:ping", "jabber:iq:version",
            "msgoffline"} <= features
    identities = {(category, kind) for category, kind, *_ in info["disco_info"]["identities"]}
    assert ("server", "im") in identities


@asyncio_test
async def test_server_answers_software_version(clients: ClientPool) -> None:
    """jabber:iq:version to the domain names the server."""
    alice = await clients.login("alice", resource="a")
    alice.register_plugin("xep_0092")
    version = await alice.plugin["xep_0092"].get_version("localhost", timeout=5)
    assert version["software_version"]["name"]


@asyncio_test
async def test_message_to_a_remote_domain_bounces_with_remote_server_not_found(clients: ClientPool) -> None:
    """Without federation, a message to another domain comes back as an error
    (RFC 6120 8.3.3.14 remote-server-not-found)."""
    alice = await clients.login("alice", resource="a")
    alice.send_message(mto="someone@example.net", mbody="far away", mtype="chat")
    error = await alice.messages.wait_for(lambda m: m.xml.get("type") == "error", what="a bounce")
    assert error.xml.get("from") == "someone@example.net"
    assert error_condition(error) == "remote-server-not-found"


@asyncio_test
async def test_message_to_own_bare_jid_reaches_own_available_resource(clients: ClientPool) -> None:
    """A chat message a user sends to their own bare JID is delivered to their available resource."""
    alice = await clients.login("alice", resource="a", available=True)
    alice.send_message(mto="alice@localhost", mbody="note to self", mtype="chat")
    got = await alice.messages.wait_for(is_chat("note to self"), what="the note to self")
    assert got.xml.get("from") == "alice@localhost/a"


def _send_with_bare_from(server: RunningServer, password: str) -> None:
    client = RawXmppClient(server.c2s_port, domain=server.domain, cafile=server.certificate_path)
    try:
        client.login("alice", password, resource="raw")
        client.send("<message from='alice@localhost' to='bob@localhost/b' type='chat'>"
                    "<body>bare from</body></message>")
        client.ping()
    finally:
        client.close()


@asyncio_test
async def test_bare_from_is_accepted_and_stamped_with_the_full_jid(
        clients: ClientPool, xmpp_server: RunningServer, accounts: dict[str, str]) -> None:
    """A stanza whose 'from' is the sender's bare JID is accepted and delivered with the
    full JID of the sending resource (RFC 6120 8.1.2.1)."""
    bob = await clients.login("bob", resource="b")
    await asyncio.to_thread(_send_with_bare_from, xmpp_server, accounts["alice"])
    got = await bob.messages.wait_for(is_chat("bare from"), what="the message")
    assert got.xml.get("from") == "alice@localhost/raw"


CROSS_ACCOUNT_IQS = [
    pytest.param("get", "bob@localhost", "<query xmlns='jabber:iq:roster'/>", "forbidden", id="read-roster"),
    pytest.param("set", "bob@localhost", "<query xmlns='jabber:iq:roster'><item jid='eve@localhost'/></query>",
                 "forbidden", id="write-roster"),
    pytest.param("get", "bob@localhost/b", "<query xmlns='jabber:iq:roster'/>", "forbidden",
                 id="read-roster-via-full-jid"),
    pytest.param("set", "bob@localhost", "<query xmlns='jabber:iq:register'><username>bob</username>"
                 "<password>pwned</password></query>", "service-unavailable", id="change-password"),
    pytest.param("set", "bob@localhost", "<query xmlns='jabber:iq:register'><remove/></query>",
                 "service-unavailable", id="remove-account"),
    pytest.param("set", "localhost", "<query xmlns='jabber:iq:register'><username>bob</username>"
                 "<password>pwned</password></query>", "not-allowed", id="change-password-via-server"),
]


def _iq(server: RunningServer, password: str, kind: str, to: str, payload: str) -> str | None:
    client = RawXmppClient(server.c2s_port, domain=server.domain, cafile=server.certificate_path)
    try:
        client.login("alice", password)
        client.send(f"<iq type='{kind}' id='cross' to='{to}'>{payload}</iq>")
        while True:
            reply = client.read_element()
            if reply.get("id") == "cross":
                break
        if reply.get("type") != "error":
            return f"type={reply.get('type')}"
        error = reply.find(f"{{{CLIENT}}}error")
        return next((c.tag.split("}", 1)[1] for c in error
                     if c.tag.startswith(f"{{{STANZA_ERRORS}}}") and not c.tag.endswith("}text")), None)
    finally:
        client.close()


@pytest.mark.parametrize("server_overrides", [{"extensions": {"register": {"enabled": True}}}])
@pytest.mark.parametrize("kind,to,payload,condition", CROSS_ACCOUNT_IQS)
@asyncio_test
async def test_iqs_against_another_account_are_refused(
        clients: ClientPool, xmpp_server: RunningServer, accounts: dict[str, str],
        kind: str, to: str, payload: str, condition: str) -> None:
    """alice cannot read or write bob's roster, change his password or remove his account;
    bob's roster stays empty and his password keeps working."""
    from support.xmpp_clients import fetch_roster

    bob = await clients.login("bob", resource="b")
    await fetch_roster(bob)
    assert await asyncio.to_thread(_iq, xmpp_server, accounts["alice"], kind, to, payload) == condition
    assert await fetch_roster(bob) == {}
    assert bob.roster_pushes.items == []
    await clients.login("bob", resource="again")
