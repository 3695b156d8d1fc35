"""SASL ANONYMOUS (RFC 4505, XEP-0175): temporary accounts with a random localpart.

``AnonymousAuthenticator`` offers ANONYMOUS on the hosts configured for it
(``[auth] anonymous`` or ``[auth.hosts."DOMAIN"] anonymous``). Each login gets a
fresh random localpart (128 bits, hex) that ``AnonymousAccounts`` remembers.

An anonymous account has no row in the account store, so it exists only while it
has a bound session (``SessionManager.account_exists`` counts bound sessions): no
offline message is stored for it and stanzas to it bounce once it is gone. When its
last session ends, ``AnonymousAccounts`` forgets it and tells the extensions, through
the ``AccountRemoved`` hook, to drop whatever they stored for it (roster rows and the
subscriptions they hold, anything else keyed by its JID).
"""

from __future__ import annotations

import secrets
from typing import Any, Callable

from twisted.internet import defer
from zope.interface import implementer

from tigasepy.interfaces import (
    IAuthenticator,
    ISaslExchange,
    SaslContext,
    SaslFailure,
    SaslSuccess,
)
from tigasepy.log_level import Logger

#: RFC 4505 2: the trace is at most 255 characters (UTF-8, so at most 1020 octets).
MAX_TRACE_OCTETS = 1020
#: An anonymous login that never binds a resource is forgotten after this long.
UNBOUND_TTL_S = 600.0


def random_localpart() -> str:
    """32 hex digits: unguessable and valid in any localpart (nodeprep-stable)."""
    return secrets.token_hex(16)


class AnonymousAccounts:
    """The anonymous accounts that exist now; cleans up after their last session.

    ``attach(sm)`` hooks the session manager's ``SessionEnded``; until then (unit
    tests) nothing is cleaned up automatically.
    """

    _log = Logger()

    def __init__(self, clock: Any, localpart: Callable[[], str] = random_localpart) -> None:
        self._clock = clock
        self._localpart = localpart
        self._created: dict[str, float] = {}
        self._sm: Any = None
        self._hook = self._session_ended  # one bound method: HookTable.remove compares identity

    def attach(self, sm: Any) -> None:
        """Watch ``sm``'s sessions: the end of an anonymous account's last one removes it."""
        from tigasepy.sm import events

        self._sm = sm
        # Last: presence has read the roster for its unavailable broadcast before it goes.
        sm.hooks.add(events.SessionEnded, self._hook, priority=-1000)

    def detach(self) -> None:
        """Stop watching the session manager."""
        from tigasepy.sm import events

        if self._sm is not None:
            self._sm.hooks.remove(events.SessionEnded, self._hook)
            self._sm = None

    def __contains__(self, bare: str) -> bool:
        return bare in self._created

    def __len__(self) -> int:
        return len(self._created)

    def new(self, domain: str) -> str:
        """A fresh localpart on ``domain``, remembered as anonymous."""
        self._prune()
        while True:
            username = self._localpart()
            bare = f"{username}@{domain}"
            if bare not in self._created:
                break
        self._created[bare] = self._clock.seconds()
        return username

    def _prune(self) -> None:
        """Forget logins older than ``UNBOUND_TTL_S`` that never bound a resource."""
        if self._sm is None:
            return
        horizon = self._clock.seconds() - UNBOUND_TTL_S
        stale = [bare for bare, created in self._created.items()
                 if created < horizon and not self._sm.sessions_of(bare)]
        for bare in stale:
            del self._created[bare]

    def _session_ended(self, event: Any) -> None:
        bare = event.session.bare
        if bare not in self._created or self._sm is None or self._sm.sessions_of(bare):
            return
        del self._created[bare]
        from tigasepy.sm import events

        self._log.debug("anonymous account {jid} ended", jid=bare)
        self._sm.hooks.notify(events.AccountRemoved, events.AccountEvent(bare))


@implementer(ISaslExchange)
class AnonymousExchange:
    """One ANONYMOUS exchange: the optional trace is ignored, success at once."""

    _log = Logger()

    def __init__(self, context: SaslContext, accounts: AnonymousAccounts) -> None:
        self._context = context
        self._accounts = accounts
        self._done = False

    def step(self, response: bytes | None) -> "defer.Deferred[SaslSuccess]":
        """See ``ISaslExchange.step``."""
        if self._done:
            return defer.fail(SaslFailure("malformed-request", "the exchange is over"))
        self._done = True
        if response is not None and len(response) > MAX_TRACE_OCTETS:
            return defer.fail(SaslFailure("malformed-request", "trace too long"))
        username = self._accounts.new(self._context.domain)
        self._log.info("anonymous login as {user}@{domain} from {peer}", user=username,
                       domain=self._context.domain, peer=self._context.peer)
        return defer.succeed(SaslSuccess(username=username))


@implementer(IAuthenticator)
class AnonymousAuthenticator:
    """``IAuthenticator`` for SASL ANONYMOUS over an ``AnonymousAccounts``."""

    def __init__(self, accounts: AnonymousAccounts) -> None:
        self.accounts = accounts

    def mechanisms(self, context: SaslContext) -> list[str]:
        """See ``IAuthenticator.mechanisms``."""
        return ["ANONYMOUS"]

    def start(self, mechanism: str, context: SaslContext) -> ISaslExchange:
        """See ``IAuthenticator.start``."""
        if mechanism != "ANONYMOUS":
            raise SaslFailure("invalid-mechanism")
        return AnonymousExchange(context, self.accounts)
