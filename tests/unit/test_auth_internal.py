"""InternalAuthenticator and AuthenticationService: what is offered, and end-to-end exchanges."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from tigasepy.auth.accounts import AccountManager
from tigasepy.auth.internal import InternalAuthenticator
from tigasepy.auth.plain import PlainServerExchange
from tigasepy.auth.scram import ScramClient, ScramServerExchange
from tigasepy.auth.service import AuthenticationService
from tigasepy.interfaces import (
    ChannelBinding,
    IAuthenticationService,
    IAuthenticator,
    SaslContext,
    SaslFailure,
    SaslSuccess,
)
from tigasepy.storage.memory import MemoryAccountStore

DOMAIN = "example.org"
BINDING = ChannelBinding({"tls-exporter": b"x" * 32})
TLS = SaslContext(domain=DOMAIN, secure=True)
TLS_CB = SaslContext(domain=DOMAIN, secure=True, channel_binding=BINDING)
CLEAR = SaslContext(domain=DOMAIN, secure=False)


def result(d: defer.Deferred):
    out = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


@pytest.fixture
def store():
    accounts = MemoryAccountStore()
    result(AccountManager(accounts, ("SHA-1", "SHA-256"), 4096).register(f"alice@{DOMAIN}", "secret"))
    return accounts


def test_internal_authenticator_provides_iauthenticator(store):
    assert verifyObject(IAuthenticator, InternalAuthenticator(store))


def test_authentication_service_provides_iauthenticationservice(store):
    assert verifyObject(IAuthenticationService, AuthenticationService({DOMAIN: InternalAuthenticator(store)}, False))


def test_mechanisms_best_first_with_plus_only_when_binding_is_available(store):
    auth = InternalAuthenticator(store)
    assert auth.mechanisms(TLS) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    assert auth.mechanisms(TLS_CB) == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256",
                                       "SCRAM-SHA-1", "PLAIN"]
    empty = SaslContext(domain=DOMAIN, secure=True, channel_binding=ChannelBinding({}))
    assert "SCRAM-SHA-1-PLUS" not in auth.mechanisms(empty)


def test_mechanisms_only_for_configured_hashes(store):
    assert InternalAuthenticator(store, hashes=("SHA-1",)).mechanisms(TLS_CB) == [
        "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1", "PLAIN"]
    with pytest.raises(ValueError):
        InternalAuthenticator(store, hashes=("MD5",))


def test_start_gives_the_right_exchange(store):
    auth = InternalAuthenticator(store)
    assert isinstance(auth.start("PLAIN", TLS), PlainServerExchange)
    assert isinstance(auth.start("SCRAM-SHA-1", TLS), ScramServerExchange)
    with pytest.raises(SaslFailure) as info:
        auth.start("SCRAM-SHA-256-PLUS", TLS)         # no binding on this connection
    assert info.value.condition == "invalid-mechanism"
    with pytest.raises(SaslFailure):
        auth.start("DIGEST-MD5", TLS)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"])
def test_registered_account_authenticates_with_every_scram_mechanism(store, mechanism):
    exchange = InternalAuthenticator(store).start(mechanism, TLS_CB)
    client = ScramClient(mechanism, "alice", "secret",
                         channel_binding=("tls-exporter", BINDING.data["tls-exporter"]))
    challenge = result(exchange.step(client.first()))
    success = result(exchange.step(client.final(challenge.data)))
    client.verify_server(success.data)
    assert success.username == "alice"


def test_non_plus_with_y_flag_is_refused_when_plus_was_offered(store):
    exchange = InternalAuthenticator(store).start("SCRAM-SHA-256", TLS_CB)
    client = ScramClient("SCRAM-SHA-256", "alice", "secret", client_supports_binding=True)
    with pytest.raises(SaslFailure) as info:
        result(exchange.step(client.first()))
    assert info.value.condition == "not-authorized"


def test_plain_checks_the_password_against_stored_keys(store):
    auth = InternalAuthenticator(store)
    assert result(auth.start("PLAIN", TLS).step(b"\0alice\0secret")) == SaslSuccess(username="alice")
    with pytest.raises(SaslFailure):
        result(auth.start("PLAIN", TLS).step(b"\0alice\0nope"))


def test_service_hides_plain_on_unencrypted_streams(store):
    service = AuthenticationService({DOMAIN: InternalAuthenticator(store)}, allow_plain_without_tls=False)
    assert service.mechanisms(CLEAR) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert service.mechanisms(TLS)[-1] == "PLAIN"
    with pytest.raises(SaslFailure) as info:
        service.start("PLAIN", CLEAR)
    assert info.value.condition == "invalid-mechanism"


def test_service_offers_plain_without_tls_when_allowed(store):
    service = AuthenticationService({DOMAIN: InternalAuthenticator(store)}, allow_plain_without_tls=True)
    assert "PLAIN" in service.mechanisms(CLEAR)
    assert result(service.start("PLAIN", CLEAR).step(b"\0alice\0secret")).username == "alice"


def test_service_offers_nothing_for_an_unknown_domain(store):
    service = AuthenticationService({DOMAIN: InternalAuthenticator(store)}, allow_plain_without_tls=True)
    other = SaslContext(domain="other.org", secure=True)
    assert service.mechanisms(other) == []
    with pytest.raises(SaslFailure) as info:
        service.start("PLAIN", other)
    assert info.value.condition == "invalid-mechanism"


def test_service_refuses_a_mechanism_not_offered(store):
    service = AuthenticationService({DOMAIN: InternalAuthenticator(store, hashes=("SHA-1",))}, False)
    with pytest.raises(SaslFailure) as info:
        service.start("SCRAM-SHA-256", TLS)
    assert info.value.condition == "invalid-mechanism"


def test_server_secret_is_created_private_and_kept_across_restarts(tmp_path):
    import stat

    from tigasepy.auth.server_secret import load_or_create_secret

    path = tmp_path / "data" / "server-secret"
    first = load_or_create_secret(path)
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == first


def test_storage_outage_is_logged_as_one_line_without_traceback(log_events):
    from twisted.logger import Logger, LogLevel
    from twisted.python.failure import Failure

    from tigasepy.storage.interfaces import StorageUnavailable
    from tigasepy.storage.outage import log_failure

    log_failure(Logger(), Failure(StorageUnavailable("database down")), "lookup failed for {who}", who="x")
    [event] = [e for e in log_events if "lookup failed" in e.get("log_format", "")]
    assert event["log_level"] is LogLevel.warn
    assert "log_failure" not in event
