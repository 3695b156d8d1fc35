"""SCRAM (RFC 5802 / RFC 7677): known answers, client side, and the hardened server exchange."""

from __future__ import annotations

import base64

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from tigasepy.auth.scram import (
    ScramClient,
    ScramError,
    ScramServerExchange,
    decode_saslname,
    encode_saslname,
    fake_salt,
    make_credential,
    saslprep,
)
from tigasepy.interfaces import ChannelBinding, ISaslExchange, SaslChallenge, SaslContext, SaslFailure, SaslSuccess
from tigasepy.storage.interfaces import ScramCredential

DOMAIN = "example.org"
SECRET = b"s" * 32

# RFC 5802 section 5 and RFC 7677 section 3 example exchanges (user "user", password "pencil").
RFC5802 = dict(
    hash_name="SHA-1", salt="QSXCR+Q6sek8bf92", client_nonce="fyko+d2lbbFgONRv9qkxdawL",
    server_nonce="3rfcNHYJY1ZVvWVs7j",
    client_first=b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
    server_first=b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    client_final=b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    server_final=b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
)
RFC7677 = dict(
    hash_name="SHA-256", salt="W22ZaJ0SNY7soEsUEjb6gQ==", client_nonce="rOprNGfwEbeRWgbNEkqO",
    server_nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    client_first=b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
    server_first=b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    client_final=(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                  b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
    server_final=b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
)
VECTORS = pytest.mark.parametrize("vector", [RFC5802, RFC7677], ids=["rfc5802-sha1", "rfc7677-sha256"])


def result(d: defer.Deferred):
    """The result of an already-fired Deferred; re-raises its failure."""
    out = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def failure_condition(d: defer.Deferred) -> str:
    with pytest.raises(SaslFailure) as info:
        result(d)
    return info.value.condition


class Accounts:
    """A credential lookup over a dict, recording the JIDs asked for."""

    def __init__(self, **passwords: str) -> None:
        self.creds = {}
        self.asked = []
        for user, password in passwords.items():
            for h in ("SHA-1", "SHA-256"):
                self.creds[(f"{user}@{DOMAIN}", h)] = make_credential(h, password, 4096)

    def lookup(self, jid, hash_name):
        self.asked.append(jid)
        return defer.succeed(self.creds.get((jid, hash_name)))


def server(mechanism="SCRAM-SHA-256", accounts=None, binding=None, plus_offered=None, **kw):
    accounts = accounts or Accounts(user="pencil")
    context = SaslContext(domain=DOMAIN, secure=True, channel_binding=binding, peer="192.0.2.1")
    if plus_offered is None:
        plus_offered = bool(binding and binding.types)
    return ScramServerExchange(mechanism, context, accounts.lookup, secret=SECRET,
                               plus_offered=plus_offered, **kw)


def run(exchange, client) -> SaslSuccess:
    challenge = result(exchange.step(client.first()))
    assert isinstance(challenge, SaslChallenge)
    success = result(exchange.step(client.final(challenge.data)))
    assert isinstance(success, SaslSuccess)
    client.verify_server(success.data)
    return success


# --- known answers -----------------------------------------------------------------------

@VECTORS
def test_server_reproduces_the_rfc_example_exchange(vector):
    salt = base64.b64decode(vector["salt"])
    cred = make_credential(vector["hash_name"], "pencil", 4096, salt=salt)
    exchange = ScramServerExchange(
        f"SCRAM-{vector['hash_name']}", SaslContext(domain=DOMAIN, secure=True),
        lambda jid, h: defer.succeed(cred if jid == f"user@{DOMAIN}" else None),
        secret=SECRET, plus_offered=False, nonce_source=lambda: vector["server_nonce"])
    challenge = result(exchange.step(vector["client_first"]))
    assert challenge == SaslChallenge(vector["server_first"])
    success = result(exchange.step(vector["client_final"]))
    assert success == SaslSuccess(username="user", data=vector["server_final"])


@VECTORS
def test_client_reproduces_the_rfc_example_exchange(vector):
    client = ScramClient(f"SCRAM-{vector['hash_name']}", "user", "pencil", nonce=vector["client_nonce"])
    assert client.first() == vector["client_first"]
    assert client.final(vector["server_first"]) == vector["client_final"]
    client.verify_server(vector["server_final"])


def test_client_rejects_a_wrong_server_signature():
    client = ScramClient("SCRAM-SHA-1", "user", "pencil", nonce=RFC5802["client_nonce"])
    client.final(RFC5802["server_first"])
    with pytest.raises(ScramError):
        client.verify_server(b"v=" + base64.b64encode(b"\0" * 20))
    with pytest.raises(ScramError):
        client.verify_server(b"e=invalid-proof")


def test_client_rejects_a_server_nonce_that_does_not_extend_its_own():
    client = ScramClient("SCRAM-SHA-1", "user", "pencil", nonce="abc")
    with pytest.raises(ScramError):
        client.final(b"r=xyzdef,s=QSXCR+Q6sek8bf92,i=4096")
    with pytest.raises(ScramError):
        client.final(b"r=abc,s=QSXCR+Q6sek8bf92,i=4096")       # no server part
    with pytest.raises(ScramError):
        client.final(b"garbage")


def test_make_credential_draws_a_fresh_salt_and_keeps_no_password():
    a, b = make_credential("SHA-256", "pencil", 4096), make_credential("SHA-256", "pencil", 4096)
    assert a.salt != b.salt and len(a.salt) == 16
    assert a.stored_key != b.stored_key and len(a.stored_key) == 32
    assert b"pencil" not in repr(a).encode()


# --- SASLprep and names --------------------------------------------------------------------

@pytest.mark.parametrize("raw, prepared", [
    ("I\u00adX", "IX"), ("user", "user"), ("USER", "USER"), ("\u00aa", "a"), ("\u2168", "IX"),
    ("a\u00a0b", "a b"),
])
def test_saslprep_maps_like_rfc4013_examples(raw, prepared):
    assert saslprep(raw) == prepared


@pytest.mark.parametrize("raw", ["\u0007", "\u0627\u0031", "a\ud800b".encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")])
def test_saslprep_rejects_prohibited_and_bad_bidi(raw):
    with pytest.raises(ValueError):
        saslprep(raw)


def test_saslname_escaping_round_trips():
    assert encode_saslname("a,b=c") == "a=2Cb=3Dc"
    assert decode_saslname("a=2Cb=3Dc") == "a,b=c"
    with pytest.raises(ValueError):
        decode_saslname("a=2Db")


# --- server exchange ---------------------------------------------------------------------

def test_server_exchange_provides_isaslexchange():
    assert verifyObject(ISaslExchange, server())


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_right_password_succeeds_with_server_signature(mechanism):
    assert run(server(mechanism), ScramClient(mechanism, "user", "pencil")).username == "user"


def test_bad_password_gets_not_authorized():
    exchange = server()
    client = ScramClient("SCRAM-SHA-256", "user", "wrong")
    challenge = result(exchange.step(client.first()))
    assert failure_condition(exchange.step(client.final(challenge.data))) == "not-authorized"


def test_unknown_user_gets_a_stable_fake_salt_and_fails_only_at_proof_time():
    exchange = server(fake_iterations=12345)
    client = ScramClient("SCRAM-SHA-256", "mallory", "pencil")
    challenge = result(exchange.step(client.first()))
    attrs = dict(part.split("=", 1) for part in challenge.data.decode().split(","))
    assert attrs["i"] == "12345"
    assert base64.b64decode(attrs["s"]) == fake_salt(SECRET, "SHA-256", f"mallory@{DOMAIN}")
    again = result(server().step(ScramClient("SCRAM-SHA-256", "mallory", "x").first()))
    assert dict(p.split("=", 1) for p in again.data.decode().split(","))["s"] == attrs["s"]
    assert failure_condition(exchange.step(client.final(challenge.data))) == "not-authorized"


def test_username_is_nodeprepped():
    assert run(server(), ScramClient("SCRAM-SHA-256", "User", "pencil")).username == "user"


def test_empty_initial_response_gets_an_empty_challenge_first():
    exchange = server()
    assert result(exchange.step(None)) == SaslChallenge(b"")
    run(exchange, ScramClient("SCRAM-SHA-256", "user", "pencil"))


def test_step_after_success_is_malformed():
    exchange = server()
    run(exchange, ScramClient("SCRAM-SHA-256", "user", "pencil"))
    assert failure_condition(exchange.step(b"c=biws")) == "malformed-request"


def test_y_flag_fails_when_plus_was_offered():
    """A client saying "y" (it could bind, server offered no -PLUS) reveals a downgrade."""
    binding = ChannelBinding({"tls-exporter": b"k" * 32})
    exchange = server("SCRAM-SHA-256", binding=binding)
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", client_supports_binding=True)
    assert failure_condition(exchange.step(client.first())) == "not-authorized"


def test_y_flag_is_fine_when_no_plus_was_offered():
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", client_supports_binding=True)
    assert run(server("SCRAM-SHA-256"), client).username == "user"


@pytest.mark.parametrize("cb_type", ["tls-exporter", "tls-server-end-point"])
def test_plus_with_matching_channel_binding_succeeds(cb_type):
    binding = ChannelBinding({"tls-exporter": b"e" * 32, "tls-server-end-point": b"p" * 32})
    client = ScramClient("SCRAM-SHA-256-PLUS", "user", "pencil",
                         channel_binding=(cb_type, binding.data[cb_type]))
    assert run(server("SCRAM-SHA-256-PLUS", binding=binding), client).username == "user"


def test_plus_with_wrong_channel_binding_data_gets_not_authorized():
    exchange = server("SCRAM-SHA-1-PLUS", binding=ChannelBinding({"tls-exporter": b"real" * 8}))
    client = ScramClient("SCRAM-SHA-1-PLUS", "user", "pencil", channel_binding=("tls-exporter", b"mitm" * 8))
    challenge = result(exchange.step(client.first()))
    assert failure_condition(exchange.step(client.final(challenge.data))) == "not-authorized"


def test_plus_with_a_binding_type_not_available_gets_not_authorized():
    exchange = server("SCRAM-SHA-256-PLUS", binding=ChannelBinding({"tls-exporter": b"e" * 32}))
    client = ScramClient("SCRAM-SHA-256-PLUS", "user", "pencil", channel_binding=("tls-unique", b"u" * 12))
    assert failure_condition(exchange.step(client.first())) == "not-authorized"


def test_plus_without_p_flag_gets_not_authorized():
    exchange = server("SCRAM-SHA-256-PLUS", binding=ChannelBinding({"tls-exporter": b"e" * 32}))
    assert failure_condition(exchange.step(b"n,,n=user,r=abcdef")) == "not-authorized"


def test_p_flag_with_a_non_plus_mechanism_gets_not_authorized():
    exchange = server("SCRAM-SHA-256", binding=ChannelBinding({"tls-exporter": b"e" * 32}))
    assert failure_condition(exchange.step(b"p=tls-exporter,,n=user,r=abcdef")) == "not-authorized"


def test_c_attribute_must_repeat_the_gs2_header():
    exchange = server("SCRAM-SHA-256")
    client = ScramClient("SCRAM-SHA-256", "user", "pencil")
    challenge = result(exchange.step(client.first()))
    final = client.final(challenge.data).replace(b"c=biws", b"c=" + base64.b64encode(b"y,,"))
    assert failure_condition(exchange.step(final)) == "not-authorized"


def test_nonce_must_be_the_servers():
    exchange = server("SCRAM-SHA-256")
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce="clientnonce")
    challenge = result(exchange.step(client.first()))
    forged = challenge.data.replace(b"r=clientnonce", b"r=clientnonceX")
    final = client.final(forged)
    assert failure_condition(exchange.step(final)) == "not-authorized"


def test_authzid_of_the_users_own_bare_jid_is_accepted():
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", authzid=f"user@{DOMAIN}")
    assert run(server(), client).username == "user"


@pytest.mark.parametrize("authzid", [f"admin@{DOMAIN}", f"user@{DOMAIN}/res", "user@other.org", "@@"])
def test_other_authzid_gets_invalid_authzid(authzid):
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", authzid=authzid)
    assert failure_condition(server().step(client.first())) == "invalid-authzid"


@pytest.mark.parametrize("message", [
    b"", b"garbage", b"n,,", b"n,,r=abc,n=user", b"n,,n=user", b"x,,n=user,r=abc",
    b"n,,n=us=ZZer,r=abc", b"n,,m=ext,n=user,r=abc", b"n,,n=user,r=abc,m=ext", b"n,b=x,n=user,r=abc",
    b"n,,n=user,r=a,b", b"\xff\xfe", b"n,,n=user,r=", b"n,,n=user,r=" + b"x" * 5000,
])
def test_malformed_client_first_gets_malformed_request(message):
    assert failure_condition(server().step(message)) == "malformed-request"


@pytest.mark.parametrize("mangle", [
    lambda f: f.replace(b",p=", b",x="),                   # no proof
    lambda f: f + b"!!",                                    # proof not base64
    lambda f: f.replace(b"c=biws", b"c=#"),                 # binding not base64
    lambda f: b"r=" + f,                                    # attributes out of order
    lambda f: f.replace(b",p=", b",m=x,p="),                # mandatory extension
])
def test_malformed_client_final_gets_malformed_request(mangle):
    exchange = server()
    client = ScramClient("SCRAM-SHA-256", "user", "pencil")
    challenge = result(exchange.step(client.first()))
    assert failure_condition(exchange.step(mangle(client.final(challenge.data)))) == "malformed-request"


def test_proof_of_the_wrong_length_gets_not_authorized():
    exchange = server()
    client = ScramClient("SCRAM-SHA-256", "user", "pencil")
    challenge = result(exchange.step(client.first()))
    final = client.final(challenge.data)
    short = final[:final.index(b",p=")] + b",p=" + base64.b64encode(b"x" * 5)
    assert failure_condition(exchange.step(short)) == "not-authorized"


@pytest.mark.parametrize("username", [b"a@b", b"", b"x" * 1024])
def test_unpreparable_or_overlong_username_gets_not_authorized(username):
    assert failure_condition(server().step(b"n,,n=" + username + b",r=abcdef")) == "not-authorized"


def test_failed_lookup_gets_temporary_auth_failure():
    context = SaslContext(domain=DOMAIN, secure=True)
    exchange = ScramServerExchange("SCRAM-SHA-1", context, lambda j, h: defer.fail(RuntimeError("db down")),
                                   secret=SECRET, plus_offered=False)
    assert failure_condition(exchange.step(b"n,,n=user,r=abcdef")) == "temporary-auth-failure"


def test_exchange_is_dead_after_a_failure():
    exchange = server()
    failure_condition(exchange.step(b"garbage"))
    assert failure_condition(exchange.step(ScramClient("SCRAM-SHA-256", "user", "pencil").first())) \
        == "malformed-request"


def test_credential_of_another_hash_is_treated_as_unknown():
    accounts = Accounts()
    accounts.creds[(f"user@{DOMAIN}", "SHA-256")] = make_credential("SHA-1", "pencil", 4096)
    exchange = server("SCRAM-SHA-256", accounts=accounts)
    client = ScramClient("SCRAM-SHA-256", "user", "pencil")
    challenge = result(exchange.step(client.first()))
    assert failure_condition(exchange.step(client.final(challenge.data))) == "not-authorized"


def test_scram_credential_is_what_the_store_keeps():
    cred = make_credential("SHA-1", "pencil", 4096, salt=b"x" * 16)
    assert isinstance(cred, ScramCredential) and cred.iterations == 4096 and cred.salt == b"x" * 16
