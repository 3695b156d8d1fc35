"""AuthenticatorChain: offered mechanisms, PLAIN tried in order, outages, SCRAM routing; the service over chains."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tigasepy.auth.accounts import AccountManager
from tigasepy.auth.anonymous import AnonymousAccounts, AnonymousAuthenticator
from tigasepy.auth.chain import AuthenticatorChain, ChainedPlainExchange
from tigasepy.auth.internal import InternalAuthenticator
from tigasepy.auth.plain import PasswordPlainExchange
from tigasepy.auth.scram import ScramClient
from tigasepy.auth.service import AuthenticationService
from tigasepy.interfaces import (
    ChannelBinding,
    IAuthenticator,
    ISaslExchange,
    SaslChallenge,
    SaslContext,
    SaslFailure,
    SaslSuccess,
)
from tigasepy.storage.memory import MemoryAccountStore

DOMAIN = "example.org"
TLS = SaslContext(domain=DOMAIN, secure=True)
TLS_CB = SaslContext(domain=DOMAIN, secure=True, channel_binding=ChannelBinding({"tls-exporter": b"x" * 32}))
CLEAR = SaslContext(domain=DOMAIN, secure=False)


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


@implementer(IAuthenticator)
class FakeDirectory:
    """A PLAIN-only authenticator over a dict; ``down`` makes every check fail as an outage."""

    def __init__(self, users: dict[str, str], down: bool = False, error: Exception | None = None) -> None:
        self.users = users
        self.down = down
        self.error = error
        self.checked: list[str] = []

    def mechanisms(self, context):
        return ["PLAIN"]

    def check(self, username, password):
        self.checked.append(username)
        if self.error is not None:
            return defer.fail(self.error)
        if self.down:
            return defer.fail(SaslFailure("temporary-auth-failure"))
        return defer.succeed(self.users.get(username) == password)

    def start(self, mechanism, context):
        if mechanism != "PLAIN":
            raise SaslFailure("invalid-mechanism")
        return PasswordPlainExchange(context, self.check)


@pytest.fixture
def internal():
    store = MemoryAccountStore()
    manager = AccountManager(store, ("SHA-1", "SHA-256"), 4096)
    result(manager.register(f"alice@{DOMAIN}", "internal-pw"))
    result(manager.register(f"dave@{DOMAIN}", "dave-pw"))
    return InternalAuthenticator(store, fake_iterations=4096, secret=b"s" * 32)


def plain(authenticator, user, password, context=TLS):
    exchange = authenticator.start("PLAIN", context)
    return exchange.step(f"\0{user}\0{password}".encode())


def test_chain_provides_iauthenticator(internal):
    assert verifyObject(IAuthenticator, AuthenticatorChain([internal]))


def test_an_empty_chain_is_refused():
    with pytest.raises(ValueError):
        AuthenticatorChain([])


def test_ldap_only_chain_offers_plain_only():
    chain = AuthenticatorChain([FakeDirectory({})])
    assert chain.mechanisms(TLS) == ["PLAIN"]
    assert chain.mechanisms(TLS_CB) == ["PLAIN"]


def test_mechanisms_are_the_union_best_first(internal):
    chain = AuthenticatorChain([FakeDirectory({}), internal])
    assert chain.mechanisms(TLS) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    assert chain.mechanisms(TLS_CB)[:2] == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"]
    assert chain.mechanisms(TLS_CB).count("PLAIN") == 1


def test_anonymous_comes_last(internal):
    chain = AuthenticatorChain([AnonymousAuthenticator(AnonymousAccounts(_Clock())), internal])
    assert chain.mechanisms(TLS)[-2:] == ["PLAIN", "ANONYMOUS"]


def test_unknown_mechanism_is_invalid(internal):
    with pytest.raises(SaslFailure) as info:
        AuthenticatorChain([FakeDirectory({})]).start("SCRAM-SHA-1", TLS)
    assert info.value.condition == "invalid-mechanism"


def test_single_plain_member_is_used_directly():
    directory = FakeDirectory({"bob": "pw"})
    exchange = AuthenticatorChain([directory]).start("PLAIN", TLS)
    assert isinstance(exchange, PasswordPlainExchange)


def test_plain_first_success_wins(internal):
    directory = FakeDirectory({"alice": "ldap-pw"})
    chain = AuthenticatorChain([directory, internal])
    exchange = chain.start("PLAIN", TLS)
    assert isinstance(exchange, ChainedPlainExchange)
    assert verifyObject(ISaslExchange, exchange)
    assert result(exchange.step(b"\0alice\0ldap-pw")) == SaslSuccess(username="alice")


def test_not_authorized_from_one_tries_the_next(internal):
    directory = FakeDirectory({"alice": "ldap-pw"})
    chain = AuthenticatorChain([directory, internal])
    assert result(plain(chain, "alice", "internal-pw")).username == "alice"
    assert directory.checked == ["alice"]


def test_wrong_everywhere_is_not_authorized(internal):
    chain = AuthenticatorChain([FakeDirectory({"alice": "ldap-pw"}), internal])
    assert condition(plain(chain, "alice", "nope")) == "not-authorized"


def test_an_outage_of_one_continues_with_the_next(internal):
    directory = FakeDirectory({"dave": "x"}, down=True)
    chain = AuthenticatorChain([directory, internal])
    assert result(plain(chain, "dave", "dave-pw")).username == "dave"


def test_none_succeeded_and_one_was_down_is_temporary(internal):
    chain = AuthenticatorChain([FakeDirectory({}, down=True), internal])
    assert condition(plain(chain, "erin", "whatever")) == "temporary-auth-failure"


def test_an_unexpected_error_counts_as_down(internal):
    chain = AuthenticatorChain([FakeDirectory({}, error=RuntimeError("boom")), internal])
    assert condition(plain(chain, "erin", "whatever")) == "temporary-auth-failure"
    assert result(plain(chain, "dave", "dave-pw")).username == "dave"


def test_a_member_that_raises_on_start_counts_as_down(internal):
    class Broken(FakeDirectory):
        def start(self, mechanism, context):
            raise RuntimeError("cannot start")

    chain = AuthenticatorChain([Broken({}), internal])
    assert result(plain(chain, "dave", "dave-pw")).username == "dave"
    assert condition(plain(chain, "erin", "x")) == "temporary-auth-failure"


def test_malformed_message_stops_at_once(internal):
    directory = FakeDirectory({})
    second = FakeDirectory({})
    chain = AuthenticatorChain([directory, second])
    assert condition(chain.start("PLAIN", TLS).step(b"no-nul-separators")) == "malformed-request"
    assert condition(chain.start("PLAIN", TLS).step(b"\0alice\0")) == "malformed-request"
    assert directory.checked == second.checked == []


def test_authzid_for_someone_else_stops_at_once(internal):
    chain = AuthenticatorChain([FakeDirectory({"alice": "pw"}), internal])
    exchange = chain.start("PLAIN", TLS)
    assert condition(exchange.step(f"mallory@{DOMAIN}\0alice\0pw".encode())) == "invalid-authzid"


def test_chained_plain_without_initial_response_gets_an_empty_challenge(internal):
    exchange = AuthenticatorChain([FakeDirectory({"alice": "ldap-pw"}), internal]).start("PLAIN", TLS)
    assert result(exchange.step(None)) == SaslChallenge(b"")
    assert result(exchange.step(b"\0alice\0ldap-pw")).username == "alice"
    assert condition(exchange.step(b"\0alice\0ldap-pw")) == "malformed-request"


def test_scram_goes_to_the_member_storing_keys(internal):
    chain = AuthenticatorChain([FakeDirectory({"alice": "ldap-pw"}), internal])
    exchange = chain.start("SCRAM-SHA-256", TLS)
    client = ScramClient("SCRAM-SHA-256", "alice", "internal-pw")
    challenge = result(exchange.step(client.first()))
    success = result(exchange.step(client.final(challenge.data)))
    assert success.username == "alice"
    client.verify_server(success.data)


def test_scram_with_the_directory_password_fails(internal):
    chain = AuthenticatorChain([FakeDirectory({"alice": "ldap-pw"}), internal])
    exchange = chain.start("SCRAM-SHA-1", TLS)
    client = ScramClient("SCRAM-SHA-1", "alice", "ldap-pw")
    challenge = result(exchange.step(client.first()))
    assert condition(exchange.step(client.final(challenge.data))) == "not-authorized"


def test_service_keeps_plain_off_unencrypted_streams_for_a_directory_host(internal):
    service = AuthenticationService({DOMAIN: AuthenticatorChain([FakeDirectory({})])})
    assert service.mechanisms(TLS) == ["PLAIN"]
    assert service.mechanisms(CLEAR) == []
    with pytest.raises(SaslFailure):
        service.start("PLAIN", CLEAR)


def test_per_host_chains(internal):
    guest = AuthenticatorChain([AnonymousAuthenticator(AnonymousAccounts(_Clock()))])
    corp = AuthenticatorChain([FakeDirectory({"alice": "ldap-pw"})])
    service = AuthenticationService({DOMAIN: AuthenticatorChain([internal]), "corp.example": corp,
                                     "guest.example": guest})
    assert service.mechanisms(SaslContext(domain="guest.example", secure=True)) == ["ANONYMOUS"]
    assert service.mechanisms(SaslContext(domain="corp.example", secure=True)) == ["PLAIN"]
    assert "SCRAM-SHA-1" in service.mechanisms(TLS)
    assert "ANONYMOUS" not in service.mechanisms(TLS)


class _Clock:
    def seconds(self) -> float:
        return 1000.0
