"""SASL ANONYMOUS (XEP-0175): random localparts, temporary accounts cleaned up after the last session."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from tests.support.presence_kit import login, make_stores, make_world
from tigasepy.auth.anonymous import (
    MAX_TRACE_OCTETS,
    UNBOUND_TTL_S,
    AnonymousAccounts,
    AnonymousAuthenticator,
    random_localpart,
)
from tigasepy.extensions.message import MessageDelivery
from tigasepy.extensions.offline import OfflineConfig, OfflineMessages
from tigasepy.interfaces import IAuthenticator, ISaslExchange, SaslContext, SaslFailure
from tigasepy.storage.interfaces import IOfflineStore, IRosterStore, RosterItem
from tigasepy.xmpp.jid import parse_jid

DOMAIN = "example.org"
CONTEXT = SaslContext(domain=DOMAIN, secure=True, peer="127.0.0.1:1")


def result(d: defer.Deferred):
    out = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


@pytest.fixture
def stores():
    return make_stores()


@pytest.fixture
def world(stores):
    return make_world(stores, extra=((MessageDelivery, None), (OfflineMessages, OfflineConfig())))


@pytest.fixture
def anonymous(world):
    accounts = AnonymousAccounts(world.clock)
    accounts.attach(world.sm)
    return accounts


def anonymous_login(accounts: AnonymousAccounts, trace: bytes | None = None) -> str:
    exchange = AnonymousAuthenticator(accounts).start("ANONYMOUS", CONTEXT)
    return result(exchange.step(trace)).username


def test_authenticator_provides_the_interfaces(anonymous):
    authenticator = AnonymousAuthenticator(anonymous)
    assert verifyObject(IAuthenticator, authenticator)
    assert verifyObject(ISaslExchange, authenticator.start("ANONYMOUS", CONTEXT))
    assert authenticator.mechanisms(CONTEXT) == ["ANONYMOUS"]
    with pytest.raises(SaslFailure) as info:
        authenticator.start("PLAIN", CONTEXT)
    assert info.value.condition == "invalid-mechanism"


def test_random_localparts_are_valid_unique_and_unguessable():
    names = {random_localpart() for _ in range(200)}
    assert len(names) == 200
    for name in names:
        assert len(name) == 32
        assert parse_jid(f"{name}@{DOMAIN}").user == name  # nodeprep leaves it as it is


def test_login_succeeds_at_once_with_or_without_a_trace(anonymous):
    first = anonymous_login(anonymous)
    second = anonymous_login(anonymous, b"someone@example.net")
    third = anonymous_login(anonymous, b"")
    assert len({first, second, third}) == 3
    assert f"{first}@{DOMAIN}" in anonymous and len(anonymous) == 3


def test_an_over_long_trace_is_malformed(anonymous):
    exchange = AnonymousAuthenticator(anonymous).start("ANONYMOUS", CONTEXT)
    with pytest.raises(SaslFailure) as info:
        result(exchange.step(b"x" * (MAX_TRACE_OCTETS + 1)))
    assert info.value.condition == "malformed-request"
    assert len(anonymous) == 0


def test_a_second_step_is_refused(anonymous):
    exchange = AnonymousAuthenticator(anonymous).start("ANONYMOUS", CONTEXT)
    result(exchange.step(None))
    with pytest.raises(SaslFailure):
        result(exchange.step(b""))


def test_a_colliding_localpart_is_drawn_again(world):
    names = iter(["same", "same", "other"])
    accounts = AnonymousAccounts(world.clock, localpart=lambda: next(names))
    assert accounts.new(DOMAIN) == "same"
    assert accounts.new(DOMAIN) == "other"


def test_the_account_exists_while_bound_and_not_after_logout(world, anonymous):
    user = anonymous_login(anonymous)
    bare = f"{user}@{DOMAIN}"
    session = world.connect(f"{bare}/r")
    assert result(world.sm.account_exists(bare)) is True
    world.disconnect(session)
    assert result(world.sm.account_exists(bare)) is False
    assert bare not in anonymous


def test_no_offline_message_is_stored_for_a_gone_anonymous_user(world, anonymous, stores):
    user = anonymous_login(anonymous)
    bare = f"{user}@{DOMAIN}"
    world.disconnect(world.connect(f"{bare}/r"))
    alice = login(world, f"alice@{DOMAIN}/a")
    world.send(alice, f"<message to='{bare}' type='chat' id='m1'><body>hi</body></message>")
    assert result(stores[IOfflineStore].count(bare)) == 0
    errors = [s for s in alice.take() if s.getAttribute("type") == "error"]
    assert errors, "the sender learns that nobody is there"


def test_a_registered_users_offline_storage_is_unaffected(world, anonymous, stores):
    anonymous_login(anonymous)
    alice = login(world, f"alice@{DOMAIN}/a")
    world.send(alice, f"<message to='bob@{DOMAIN}' type='chat'><body>hi</body></message>")
    assert result(stores[IOfflineStore].count(f"bob@{DOMAIN}")) == 1


def test_the_account_lives_until_its_last_resource_ends(world, anonymous):
    user = anonymous_login(anonymous)
    bare = f"{user}@{DOMAIN}"
    one, two = world.connect(f"{bare}/one"), world.connect(f"{bare}/two")
    world.disconnect(one)
    assert bare in anonymous and result(world.sm.account_exists(bare)) is True
    world.disconnect(two)
    assert bare not in anonymous


def test_roster_rows_are_removed_after_the_last_session(world, anonymous, stores):
    user = anonymous_login(anonymous)
    bare = f"{user}@{DOMAIN}"
    session = login(world, f"{bare}/r")
    world.send(session, f"<iq type='set' id='add'><query xmlns='jabber:iq:roster'>"
                        f"<item jid='alice@{DOMAIN}'/></query></iq>")
    assert result(stores[IRosterStore].get_items(bare))
    world.disconnect(session)
    assert result(stores[IRosterStore].get_items(bare)) == []


def test_ending_a_registered_users_session_removes_nothing(world, anonymous, stores):
    stores[IRosterStore].put_item(f"bob@{DOMAIN}", RosterItem(contact=f"alice@{DOMAIN}"))
    world.disconnect(login(world, f"bob@{DOMAIN}/r"))
    assert result(stores[IRosterStore].get_items(f"bob@{DOMAIN}"))
    assert result(world.sm.account_exists(f"bob@{DOMAIN}")) is True


def test_logins_that_never_bind_are_forgotten_after_a_while(world, anonymous):
    user = anonymous_login(anonymous)
    world.clock.advance(UNBOUND_TTL_S + 1)
    anonymous_login(anonymous)
    assert f"{user}@{DOMAIN}" not in anonymous and len(anonymous) == 1


def test_a_bound_login_is_not_pruned(world, anonymous):
    user = anonymous_login(anonymous)
    world.connect(f"{user}@{DOMAIN}/r")
    world.clock.advance(UNBOUND_TTL_S + 1)
    anonymous_login(anonymous)
    assert f"{user}@{DOMAIN}" in anonymous


def test_detach_stops_the_cleanup(world, anonymous):
    user = anonymous_login(anonymous)
    anonymous.detach()
    world.disconnect(world.connect(f"{user}@{DOMAIN}/r"))
    assert f"{user}@{DOMAIN}" in anonymous
