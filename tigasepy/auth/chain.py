"""Authenticator chains: one virtual host's ordered list of authenticators as one ``IAuthenticator``.

- Mechanisms offered: the union of what the members offer on the connection, best
  first (SCRAM only when a member that stores SCRAM keys is in the chain).
- PLAIN: the password is tried with each member offering PLAIN, in order. The first
  success wins; ``not-authorized`` from one goes on to the next; so does an outage
  (``temporary-auth-failure`` or an unexpected error) of one. When none accepted and
  one of them was down the answer is ``temporary-auth-failure`` (the password may be
  right where it could not be checked), else ``not-authorized``. A malformed message
  stops at once (every member would say the same).
- Any other mechanism (SCRAM-*, ANONYMOUS) runs on the first member offering it: a
  SCRAM exchange depends on that member's stored salt, so it cannot fall through.
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.internet import defer
from zope.interface import implementer

from tigasepy.interfaces import (
    IAuthenticator,
    ISaslExchange,
    SaslChallenge,
    SaslContext,
    SaslFailure,
    SaslSuccess,
)
from tigasepy.log_level import Logger

#: Preference of the mechanisms tigasepy knows, best first; unknown ones go before PLAIN.
_RANK = {name: rank for rank, name in enumerate((
    "SCRAM-SHA-512-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-512", "SCRAM-SHA-256", "SCRAM-SHA-1"))}
_RANK_UNKNOWN = 50
_RANK_TAIL = {"PLAIN": 90, "ANONYMOUS": 100}

#: Conditions that say "could not check" rather than "wrong credentials".
_OUTAGE_CONDITIONS = frozenset({"temporary-auth-failure"})
#: Conditions that end the chain at once: the message itself is wrong.
_FINAL_CONDITIONS = frozenset({"malformed-request", "invalid-authzid", "incorrect-encoding", "aborted"})


def _rank(mechanism: str) -> int:
    return _RANK.get(mechanism, _RANK_TAIL.get(mechanism, _RANK_UNKNOWN))


@implementer(IAuthenticator)
class AuthenticatorChain:
    """An ordered list of ``IAuthenticator`` acting as one."""

    def __init__(self, members: Sequence[Any], names: Sequence[str] | None = None) -> None:
        """
        Args:
            members: the authenticators, in the order a password is tried.
            names: their names for log lines (``ldap``, ``internal``); class names if None.
        """
        if not members:
            raise ValueError("an authenticator chain needs at least one authenticator")
        self.members = tuple(members)
        self.names = tuple(names) if names is not None else tuple(type(m).__name__ for m in members)

    def mechanisms(self, context: SaslContext) -> list[str]:
        """See ``IAuthenticator.mechanisms``: the union of the members', best first."""
        seen: dict[str, None] = {}
        for member in self.members:
            for mechanism in member.mechanisms(context):
                seen.setdefault(mechanism, None)
        return sorted(seen, key=_rank)  # stable: equal ranks keep the members' order

    def start(self, mechanism: str, context: SaslContext) -> ISaslExchange:
        """See ``IAuthenticator.start``.

        Raises:
            SaslFailure: ``invalid-mechanism`` when no member offers ``mechanism``.
        """
        offering = [(name, member) for name, member in zip(self.names, self.members)
                    if mechanism in member.mechanisms(context)]
        if not offering:
            raise SaslFailure("invalid-mechanism")
        if mechanism == "PLAIN" and len(offering) > 1:
            return ChainedPlainExchange(context, offering)
        return offering[0][1].start(mechanism, context)


@implementer(ISaslExchange)
class ChainedPlainExchange:
    """One PLAIN exchange tried against several authenticators in order."""

    _log = Logger()

    def __init__(self, context: SaslContext, members: Sequence[tuple[str, Any]]) -> None:
        self._context = context
        self._members = list(members)
        self._state = "start"

    def step(self, response: bytes | None) -> "defer.Deferred[SaslChallenge | SaslSuccess]":
        """See ``ISaslExchange.step``."""
        if self._state == "start" and response is None:
            self._state = "await-response"
            return defer.succeed(SaslChallenge(b""))
        if self._state not in ("start", "await-response") or response is None:
            self._state = "failed"
            return defer.fail(SaslFailure("malformed-request", "unexpected SASL response"))
        self._state = "checking"
        return self._try(0, response, [])

    def _try(self, index: int, response: bytes, down: list[str]) -> "defer.Deferred[Any]":
        if index >= len(self._members):
            self._state = "failed"
            if down:
                self._log.info("SASL PLAIN on {domain}: no authenticator accepted and {down} could not "
                               "check: temporary-auth-failure", domain=self._context.domain,
                               down=", ".join(down))
                return defer.fail(SaslFailure("temporary-auth-failure"))
            return defer.fail(SaslFailure("not-authorized"))
        name, member = self._members[index]
        try:
            exchange = member.start("PLAIN", self._context)
            d = defer.maybeDeferred(exchange.step, response)
        except Exception:  # noqa: BLE001 - one broken member must not end the chain
            d = defer.fail()

        def succeeded(result: Any) -> Any:
            if isinstance(result, SaslSuccess):
                self._state = "done"
                return result
            # A member wanting another round cannot be chained: treat it as an error.
            self._log.warn("authenticator {name} answered PLAIN with a challenge; skipped", name=name)
            return self._try(index + 1, response, down + [name])

        def failed(failure: Any) -> Any:
            if failure.check(SaslFailure):
                condition = failure.value.condition
                if condition in _FINAL_CONDITIONS:
                    self._state = "failed"
                    return failure
                if condition in _OUTAGE_CONDITIONS:
                    return self._try(index + 1, response, down + [name])
                return self._try(index + 1, response, down)
            self._log.failure("authenticator {name} failed during PLAIN", failure, name=name)
            return self._try(index + 1, response, down + [name])

        return d.addCallbacks(succeeded, failed)
