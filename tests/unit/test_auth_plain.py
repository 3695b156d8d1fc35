"""PLAIN (RFC 4616) checked against stored SCRAM credentials."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from tigasepy.auth.plain import PlainServerExchange, run_inline
from tigasepy.auth.scram import make_credential
from tigasepy.interfaces import ISaslExchange, SaslChallenge, SaslContext, SaslFailure, SaslSuccess

DOMAIN = "example.org"


def result(d: defer.Deferred):
    out = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def condition(d: defer.Deferred) -> str:
    with pytest.raises(SaslFailure) as info:
        result(d)
    return info.value.condition


CREDS = {(f"alice@{DOMAIN}", "SHA-1"): make_credential("SHA-1", "secret", 4096)}


def lookup(jid, hash_name):
    return defer.succeed(CREDS.get((jid, hash_name)))


def exchange(hashes=("SHA-256", "SHA-1"), **kw):
    return PlainServerExchange(SaslContext(domain=DOMAIN, secure=True), lookup, hashes, secret=b"k" * 32,
                               fake_iterations=4096, **kw)


def test_plain_exchange_provides_isaslexchange():
    assert verifyObject(ISaslExchange, exchange())


def test_right_password_succeeds():
    assert result(exchange().step(b"\0alice\0secret")) == SaslSuccess(username="alice")


def test_falls_back_to_the_next_hash_that_has_a_credential():
    assert result(exchange(hashes=("SHA-256", "SHA-1")).step(b"\0alice\0secret")).username == "alice"


def test_bad_password_gets_not_authorized():
    assert condition(exchange().step(b"\0alice\0wrong")) == "not-authorized"


def test_unknown_user_gets_not_authorized_after_the_same_derivation():
    calls = []

    def recording(fn, *args):
        calls.append(fn)
        return run_inline(fn, *args)

    assert condition(exchange(run_blocking=recording).step(b"\0mallory\0secret")) == "not-authorized"
    assert len(calls) == 1


def test_derivation_goes_through_run_blocking():
    calls = []

    def recording(fn, *args):
        calls.append(fn)
        return run_inline(fn, *args)

    assert result(exchange(run_blocking=recording).step(b"\0alice\0secret")).username == "alice"
    assert len(calls) == 1


def test_authcid_is_nodeprepped():
    assert result(exchange().step(b"\0ALICE\0secret")).username == "alice"


def test_authzid_own_bare_jid_is_accepted_and_another_is_refused():
    assert result(exchange().step(f"alice@{DOMAIN}\0alice\0secret".encode())).username == "alice"
    assert condition(exchange().step(f"bob@{DOMAIN}\0alice\0secret".encode())) == "invalid-authzid"


@pytest.mark.parametrize("message", [b"alice\0secret", b"\0alice\0secret\0x", b"\0\0secret", b"\0alice\0",
                                     b"\xff\0alice\0secret", b"\0alice\0" + b"x" * 5000])
def test_malformed_message_gets_malformed_request(message):
    assert condition(exchange().step(message)) == "malformed-request"


def test_empty_initial_response_gets_an_empty_challenge():
    e = exchange()
    assert result(e.step(None)) == SaslChallenge(b"")
    assert result(e.step(b"\0alice\0secret")).username == "alice"


def test_step_after_the_exchange_is_malformed():
    e = exchange()
    result(e.step(b"\0alice\0secret"))
    assert condition(e.step(b"\0alice\0secret")) == "malformed-request"


def test_store_error_gets_temporary_auth_failure():
    e = PlainServerExchange(SaslContext(domain=DOMAIN, secure=True),
                            lambda j, h: defer.fail(RuntimeError("db down")), ("SHA-1",), secret=b"k")
    assert condition(e.step(b"\0alice\0secret")) == "temporary-auth-failure"
