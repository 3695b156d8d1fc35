"""The internal authenticator: salted SCRAM keys from an ``IAccountStore``, never a password.

Offers, best first: SCRAM-SHA-256-PLUS and SCRAM-SHA-1-PLUS (only when the
connection has channel-binding data), SCRAM-SHA-256, SCRAM-SHA-1 (each only for a
configured hash), then PLAIN (checked against the stored SCRAM keys).
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

from twisted.internet import defer
from zope.interface import implementer

from tigasepy.auth.plain import PlainServerExchange, RunBlocking, run_inline
from tigasepy.auth.scram import HASHES, ScramServerExchange, mechanism_name, random_nonce
from tigasepy.interfaces import IAuthenticator, ISaslExchange, SaslContext, SaslFailure
from tigasepy.storage.interfaces import IAccountStore, ScramCredential

#: Preference order of the hashes, strongest first.
_HASH_ORDER = ("SHA-256", "SHA-1")


@implementer(IAuthenticator)
class InternalAuthenticator:
    """``IAuthenticator`` over the accounts in an ``IAccountStore``."""

    def __init__(self, accounts: IAccountStore, hashes: Sequence[str] = ("SHA-1", "SHA-256"), *,
                 secret: bytes | None = None, fake_iterations: int = 10000,
                 run_blocking: RunBlocking = run_inline,
                 nonce_source: Callable[[], str] = random_nonce) -> None:
        """
        Args:
            accounts: where the SCRAM credentials are.
            hashes: the SCRAM hashes accounts have credentials for (``SHA-1``, ``SHA-256``).
            secret: keys the fake salts shown for unknown users; pass one kept across
                restarts so a restart does not change them (random per instance if None).
            fake_iterations: the iteration count shown for unknown users (use the
                configured ``auth.scram_iterations``).
            run_blocking: runs PLAIN's PBKDF2 derivation; ``plain.in_thread_pool(reactor)``
                keeps it off the reactor thread.
            nonce_source: the server nonce part of SCRAM exchanges (fixed only in tests).
        """
        unknown = [h for h in hashes if h not in HASHES]
        if unknown or not hashes:
            raise ValueError(f"unsupported SCRAM hashes: {unknown or 'none given'}")
        self._accounts = accounts
        self._hashes = tuple(h for h in _HASH_ORDER if h in hashes)
        self._secret = secret if secret is not None else os.urandom(32)
        self._fake_iterations = fake_iterations
        self._run_blocking = run_blocking
        self._nonce_source = nonce_source

    def mechanisms(self, context: SaslContext) -> list[str]:
        """See ``IAuthenticator.mechanisms``."""
        offered = []
        if context.channel_binding is not None and context.channel_binding.types:
            offered += [mechanism_name(h, plus=True) for h in self._hashes]
        offered += [mechanism_name(h) for h in self._hashes]
        offered.append("PLAIN")
        return offered

    def _lookup(self, jid: str, hash_name: str) -> "defer.Deferred[ScramCredential | None]":
        return self._accounts.get_credential(jid, hash_name)

    def start(self, mechanism: str, context: SaslContext) -> ISaslExchange:
        """See ``IAuthenticator.start``.

        Raises:
            SaslFailure: ``invalid-mechanism`` for one not offered on ``context``.
        """
        offered = self.mechanisms(context)
        if mechanism not in offered:
            raise SaslFailure("invalid-mechanism")
        if mechanism == "PLAIN":
            return PlainServerExchange(context, self._lookup, self._hashes, secret=self._secret,
                                       fake_iterations=self._fake_iterations,
                                       run_blocking=self._run_blocking)
        return ScramServerExchange(mechanism, context, self._lookup, secret=self._secret,
                                   plus_offered=any(m.endswith("-PLUS") for m in offered),
                                   fake_iterations=self._fake_iterations,
                                   nonce_source=self._nonce_source)
