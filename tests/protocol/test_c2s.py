"""Client stream negotiation and limits (RFC 6120), over a StringTransport."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
from zope.interface.verify import verifyObject

from tests.support.c2s_harness import HEADER, C2SHarness
from tests.support.sm_harness import SMHarness
from tigasepy.config import C2SConfig
from tigasepy.extensions.message import MessageDelivery
from tigasepy.extensions.ping import Ping
from tigasepy.extensions.session import LegacySession
from tigasepy.interfaces import IClientSession
from tigasepy.storage.interfaces import IAccountStore, IOfflineStore, IRosterStore
from tigasepy.storage.memory import MemoryAccountStore, MemoryOfflineStore, MemoryRosterStore
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import error_condition


@pytest.fixture
def sm():
    stores = {IAccountStore: MemoryAccountStore(), IRosterStore: MemoryRosterStore(),
              IOfflineStore: MemoryOfflineStore()}
    return SMHarness([(Ping, None), (LegacySession, None), (MessageDelivery, None)], stores).sm


@pytest.fixture
def c2s(sm):
    return C2SHarness(sm)


def test_client_stream_provides_the_session_handle_interface(c2s):
    verifyObject(IClientSession, c2s.stream)


def test_header_gets_a_header_and_mechanisms(c2s):
    c2s.receive(HEADER)
    [features] = c2s.output()
    assert c2s.view.header["from"] == "example.org"
    assert c2s.view.header["version"] == "1.0"
    assert c2s.view.header["id"]
    mechanisms = next(features.elements(ns.SASL, "mechanisms"))
    assert [str(m) for m in mechanisms.elements()] == ["PLAIN"]


def test_starttls_is_offered_as_required_and_hides_sasl_until_done(sm):
    c2s = C2SHarness(sm, config=C2SConfig(), tls_context=object())
    c2s.receive(HEADER)
    [features] = c2s.output()
    starttls = next(features.elements(ns.TLS, "starttls"))
    assert next(starttls.elements(None, "required"), None) is not None or list(starttls.elements())
    assert next(features.elements(ns.SASL, "mechanisms"), None) is None


def test_starttls_proceeds_and_switches_the_transport(sm):
    context = object()
    c2s = C2SHarness(sm, config=C2SConfig(), tls_context=context)
    c2s.receive(HEADER)
    c2s.output()
    c2s.receive(f"<starttls xmlns='{ns.TLS}'/>")
    [proceed] = c2s.output()
    assert proceed.name == "proceed"
    assert c2s.transport.tls_context is context
    assert c2s.stream.secure
    c2s.view.restart()
    c2s.receive(HEADER)
    [features] = c2s.output()
    assert next(features.elements(ns.SASL, "mechanisms"), None) is not None
    assert c2s.auth.contexts[-1].secure


def test_auth_before_required_tls_gets_encryption_required(sm):
    c2s = C2SHarness(sm, config=C2SConfig(), tls_context=object())
    c2s.receive(HEADER)
    c2s.output()
    c2s.receive(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>")
    [failure] = c2s.output()
    assert failure.name == "failure"
    assert next(failure.elements()).name == "encryption-required"


@pytest.mark.parametrize("header,condition", [
    ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
     "host-unknown"),
    ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
     "to='elsewhere.net' version='1.0'>", "host-unknown"),
    ("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
     "to='example.org' version='1.0'>", "invalid-namespace"),
    ("<stream xmlns='jabber:client' to='example.org' version='1.0'>", "invalid-namespace"),
    ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
     "to='example.org'>", "unsupported-version"),
    ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.org' "
     "version='1.0'><<<", "not-well-formed"),
    ("<?xml version='1.0'?><!DOCTYPE foo [<!ENTITY x 'y'>]><stream:stream/>", "restricted-xml"),
])
def test_bad_stream_headers_get_the_rfc_stream_error_and_a_close(c2s, header, condition):
    c2s.receive(header)
    c2s.output()
    assert c2s.stream_error() == condition
    assert c2s.transport.disconnecting


def test_plain_login_and_bind_with_requested_resource(c2s):
    full = c2s.login(resource="phone")
    assert full == "alice@example.org/phone"


def test_bind_without_resource_gets_a_server_generated_one(c2s):
    full = c2s.login(resource=None)
    bare, _, resource = full.partition("/")
    assert bare == "alice@example.org" and len(resource) >= 8


def test_bad_password_gets_not_authorized(c2s):
    c2s.receive(HEADER)
    c2s.output()
    token = base64.b64encode(b"\0alice\0wrong").decode()
    c2s.receive(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{token}</auth>")
    [failure] = c2s.output()
    assert failure.name == "failure" and next(failure.elements()).name == "not-authorized"
    assert not c2s.transport.disconnecting


def test_repeated_bad_passwords_close_the_stream(c2s):
    c2s.receive(HEADER)
    c2s.output()
    token = base64.b64encode(b"\0alice\0wrong").decode()
    for _ in range(c2s.config.max_auth_failures):
        c2s.receive(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{token}</auth>")
    c2s.output()
    assert c2s.stream_error() == "policy-violation"
    assert c2s.transport.disconnecting


def test_unknown_mechanism_gets_invalid_mechanism(c2s):
    c2s.receive(HEADER)
    c2s.output()
    c2s.receive(f"<auth xmlns='{ns.SASL}' mechanism='X-NOPE'/>")
    [failure] = c2s.output()
    assert next(failure.elements()).name == "invalid-mechanism"


def test_bad_base64_gets_incorrect_encoding(c2s):
    c2s.receive(HEADER)
    c2s.output()
    c2s.receive(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>***</auth>")
    [failure] = c2s.output()
    assert next(failure.elements()).name == "incorrect-encoding"


def test_stanza_before_authentication_gets_not_authorized(c2s):
    c2s.receive(HEADER)
    c2s.receive("<message to='bob@example.org'><body>hi</body></message>")
    c2s.output()
    assert c2s.stream_error() == "not-authorized"


def test_spoofed_from_gets_invalid_from(c2s):
    c2s.login()
    c2s.receive("<message from='bob@example.org/x' to='bob@example.org'><body>hi</body></message>")
    c2s.output()
    assert c2s.stream_error() == "invalid-from"


def test_unknown_top_level_element_gets_unsupported_stanza_type(c2s):
    c2s.login()
    c2s.receive("<foo/>")
    c2s.output()
    assert c2s.stream_error() == "unsupported-stanza-type"


def test_iq_nobody_handles_gets_service_unavailable(c2s):
    c2s.login()
    c2s.receive("<iq type='get' id='q1' to='example.org'><x xmlns='urn:example:nope'/></iq>")
    [reply] = c2s.output()
    assert (reply["type"], reply["id"], error_condition(reply)) == ("error", "q1", "service-unavailable")


def test_ping_to_the_server_gets_a_result(c2s):
    c2s.login()
    c2s.receive("<iq type='get' id='p1' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>")
    [reply] = c2s.output()
    assert (reply["type"], reply["id"], reply["from"]) == ("result", "p1", "example.org")


def test_iq_without_id_gets_bad_request(c2s):
    c2s.login()
    c2s.receive("<iq type='get' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>")
    [reply] = c2s.output()
    assert error_condition(reply) == "bad-request"


def test_legacy_session_request_is_accepted(c2s):
    c2s.receive(HEADER)
    c2s.output()
    token = base64.b64encode(b"\0alice\0secret").decode()
    c2s.receive(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{token}</auth>")
    c2s.output()
    c2s.view.restart()
    c2s.receive(HEADER)
    c2s.output()
    c2s.receive(f"<iq type='set' id='b'><bind xmlns='{ns.BIND}'/></iq>")
    c2s.output()
    c2s.receive(f"<iq type='set' id='s'><session xmlns='{ns.SESSION}'/></iq>")
    [reply] = c2s.output()
    assert (reply["type"], reply["id"]) == ("result", "s")


def test_stanza_over_the_size_limit_gets_policy_violation(sm):
    config = replace(C2SConfig(), tls_required=False, stanza_size_limit_bytes=10000)
    c2s = C2SHarness(sm, config=config)
    c2s.login()
    c2s.receive("<message to='bob@example.org'><body>" + "x" * 10001 + "</body></message>")
    c2s.output()
    assert c2s.stream_error() == "policy-violation"


def test_stanza_at_the_size_limit_passes(sm):
    config = replace(C2SConfig(), tls_required=False, stanza_size_limit_bytes=10000)
    c2s = C2SHarness(sm, config=config)
    c2s.login()
    c2s.receive("<message to='alice@example.org/home'><body>" + "x" * 9000 + "</body></message>")
    [echo] = c2s.output()
    assert echo.name == "message" and len(str(echo.body)) == 9000
    assert c2s.stream_error() is None


def test_deeply_nested_stanza_gets_policy_violation(c2s):
    c2s.login()
    c2s.receive("<message>" + "<a>" * 40 + "</a>" * 40 + "</message>")
    c2s.output()
    assert c2s.stream_error() == "policy-violation"


def test_whitespace_keepalives_are_accepted(c2s):
    c2s.login()
    c2s.receive(" \n \t ")
    c2s.receive("<iq type='get' id='p' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>")
    [reply] = c2s.output()
    assert reply["type"] == "result"


def test_idle_client_is_disconnected(c2s):
    c2s.login()
    c2s.clock.advance(c2s.config.idle_timeout_s + 1)
    c2s.output()
    assert c2s.stream_error() == "connection-timeout"
    assert c2s.transport.disconnecting


def test_active_client_is_not_disconnected(c2s):
    c2s.login()
    for _ in range(3):
        c2s.clock.advance(c2s.config.idle_timeout_s - 1)
        c2s.receive(" ")
    c2s.output()
    assert c2s.stream_error() is None


def test_unauthenticated_stream_times_out(c2s):
    c2s.receive(HEADER)
    c2s.clock.advance(c2s.config.auth_timeout_s + 1)
    c2s.output()
    assert c2s.stream_error() == "connection-timeout"


def test_newer_session_wins_resource_conflict(sm):
    first = C2SHarness(sm)
    first.login(resource="same")
    second = C2SHarness(sm, clock=first.clock)
    second.login(resource="same")
    first.output()
    assert first.stream_error() == "conflict"
    assert sm.session("alice@example.org/same").handle is second.stream


def test_message_between_two_bound_clients_is_delivered_with_stamped_from(sm):
    alice = C2SHarness(sm)
    alice.login("alice", resource="a")
    bob = C2SHarness(sm, clock=alice.clock)
    bob.login("bob", resource="b")
    alice.receive("<message to='bob@example.org/b' type='chat' id='m1'><body>hi</body></message>")
    [message] = bob.output()
    assert (message["from"], str(message.body)) == ("alice@example.org/a", "hi")


def test_malformed_xml_closes_only_that_stream(sm):
    alice = C2SHarness(sm)
    alice.login("alice", resource="a")
    bob = C2SHarness(sm, clock=alice.clock)
    bob.login("bob", resource="b")
    alice.receive("<message><body>broken</message>")
    alice.output()
    assert alice.stream_error() == "not-well-formed"
    assert sm.session("alice@example.org/a") is None
    assert sm.session("bob@example.org/b") is not None
    assert not bob.transport.disconnecting


def test_too_many_unauthenticated_streams_are_refused(sm):
    config = replace(C2SConfig(), tls_required=False, max_unauthenticated=2)
    c2s = C2SHarness(sm, config=config)
    c2s.open()
    c2s.open()
    c2s.output()
    assert c2s.stream_error() == "resource-constraint"


def test_client_closing_the_stream_gets_a_close_and_unbinds(c2s, sm):
    c2s.login()
    c2s.receive("</stream:stream>")
    assert c2s.transport.value().endswith(b"</stream:stream>")
    assert sm.session("alice@example.org/home") is None


def test_endless_stream_header_is_cut_off_at_the_size_limit(sm):
    config = replace(C2SConfig(), tls_required=False, stanza_size_limit_bytes=10000)
    c2s = C2SHarness(sm, config=config)
    c2s.receive("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                "to='example.org' junk='")
    for _ in range(3):
        c2s.receive("A" * 4096)
    c2s.output()
    assert c2s.stream_error() == "policy-violation"
    assert c2s.transport.disconnecting


def test_a_quiet_bound_stream_parks_its_parser_and_wakes_on_input(c2s):
    c2s.login()
    c2s.receive("<presence/>")
    c2s.output()
    assert not c2s.stream.parser.parked
    c2s.clock.advance(0.5)
    assert not c2s.stream.parser.parked
    c2s.clock.advance(1)
    assert c2s.stream.parser.parked
    c2s.receive("<iq type='get' id='p1' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>")
    [reply] = c2s.output()
    assert reply["type"] == "result" and reply["id"] == "p1"
    assert not c2s.stream.parser.parked
    c2s.clock.advance(1.5)
    assert c2s.stream.parser.parked
    c2s.receive("<iq type='get' id='p2' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq></stream:stream>")
    [reply] = c2s.output()
    assert reply["id"] == "p2"
    assert c2s.view.ended and c2s.stream_error() is None


def test_a_stream_cut_inside_a_stanza_is_not_parked(c2s):
    c2s.login()
    c2s.receive("<message to='bob@example.org'><body>half")
    c2s.clock.advance(5)
    assert not c2s.stream.parser.parked
    c2s.receive("</body></message>")
    assert c2s.stream_error() is None
