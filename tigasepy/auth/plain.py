"""PLAIN (RFC 4616): checked against the stored SCRAM credential, or by a password check.

``PlainServerExchange``: the password is never stored: the salted password is
derived with the stored salt and iteration count, and its StoredKey compared in
constant time. That derivation is PBKDF2, so the exchange takes a ``run_blocking``
callable to move it off the reactor thread (``in_thread_pool(reactor)``).

``PasswordPlainExchange``: the password goes to a ``PasswordCheck`` (the LDAP
authenticator binds with it). Either is offered only over TLS (auth/service.py).
"""

from __future__ import annotations

import hmac
from typing import Any, Callable, Sequence, TypeVar

from twisted.internet import defer, threads
from twisted.words.protocols.jabber.xmpp_stringprep import nodeprep
from zope.interface import implementer

from tigasepy.auth.scram import (
    CredentialLookup,
    check_authzid,
    fake_salt,
    salted_password,
    stored_key,
)
from tigasepy.interfaces import ISaslExchange, SaslChallenge, SaslContext, SaslFailure, SaslSuccess
from tigasepy.log_level import Logger
from tigasepy.storage.interfaces import ScramCredential
from tigasepy.storage.outage import log_failure

T = TypeVar("T")

#: ``run_blocking(fn, *args)`` -> Deferred firing with ``fn(*args)``.
RunBlocking = Callable[..., "defer.Deferred[Any]"]

#: Longest PLAIN message accepted (authzid, authcid and password together).
MAX_MESSAGE_BYTES = 4096


def run_inline(fn: Callable[..., T], *args: Any) -> "defer.Deferred[T]":
    """A ``RunBlocking`` that runs ``fn`` right away on the calling thread."""
    return defer.maybeDeferred(fn, *args)


def in_thread_pool(reactor: Any) -> RunBlocking:
    """A ``RunBlocking`` that runs ``fn`` in ``reactor``'s thread pool."""
    def run(fn: Callable[..., T], *args: Any) -> "defer.Deferred[T]":
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)
    return run


def _password_matches(credential: ScramCredential, password: str) -> bool:
    try:
        salted = salted_password(credential.hash_name, password, credential.salt, credential.iterations)
    except ValueError:
        return False
    return hmac.compare_digest(stored_key(credential.hash_name, salted), credential.stored_key)


#: ``check(username, password)`` -> Deferred firing True when the password is right.
PasswordCheck = Callable[[str, str], "defer.Deferred[bool]"]


class _PlainExchange:
    """What every PLAIN exchange shares: the message format, authzid rule, state and log lines.

    Subclasses implement ``_verify(jid, username, password)``, a Deferred firing with
    True/False (or failing: a ``SaslFailure`` passes through, anything else is logged
    and becomes ``temporary-auth-failure``).
    """

    _log = Logger()

    def __init__(self, context: SaslContext) -> None:
        self._context = context
        self._state = "start"
        self._username = ""

    def step(self, response: bytes | None) -> "defer.Deferred[SaslChallenge | SaslSuccess]":
        """See ``ISaslExchange.step``."""
        if self._state == "start" and response is None:
            self._state = "await-response"
            return defer.succeed(SaslChallenge(b""))
        if self._state not in ("start", "await-response") or response is None:
            return self._fail(SaslFailure("malformed-request", "unexpected SASL response"))
        self._state = "checking"
        try:
            authzid, username, password = self._parse(response)
            jid = f"{username}@{self._context.domain}"
            check_authzid(authzid, jid)
        except SaslFailure as failure:
            return self._fail(failure)
        d = defer.maybeDeferred(self._verify, jid, username, password)
        d.addCallback(self._decide)
        d.addErrback(self._errored)
        return d

    def _verify(self, jid: str, username: str, password: str) -> "defer.Deferred[bool]":
        raise NotImplementedError

    def _parse(self, response: bytes) -> tuple[str, str, str]:
        if len(response) > MAX_MESSAGE_BYTES:
            raise SaslFailure("malformed-request", "message too long")
        try:
            authzid, authcid, password = response.decode("utf-8").split("\0")
        except (UnicodeDecodeError, ValueError):
            raise SaslFailure("malformed-request", "malformed PLAIN message") from None
        if not authcid or not password:
            raise SaslFailure("malformed-request", "empty user name or password")
        self._username = authcid
        try:
            username = nodeprep.prepare(authcid)
        except UnicodeError:
            raise SaslFailure("not-authorized") from None
        if not username:
            raise SaslFailure("not-authorized")
        self._username = username
        return authzid, username, password

    def _decide(self, ok: bool) -> SaslSuccess:
        if not ok:
            raise SaslFailure("not-authorized")
        self._state = "done"
        self._log.debug("SASL PLAIN succeeded for {user} on {domain}",
                        user=self._username, domain=self._context.domain)
        return SaslSuccess(username=self._username)

    def _errored(self, failure: Any) -> Any:
        if failure.check(SaslFailure):
            return self._fail(failure.value)
        log_failure(self._log, failure, "PLAIN credential check failed")
        return self._fail(SaslFailure("temporary-auth-failure"))

    def _fail(self, failure: SaslFailure) -> "defer.Deferred[Any]":
        self._state = "failed"
        self._log.info("SASL PLAIN failed for {user!r} on {domain} from {peer}: {condition}",
                       user=self._username, domain=self._context.domain, peer=self._context.peer,
                       condition=failure.condition)
        return defer.fail(failure)


@implementer(ISaslExchange)
class PlainServerExchange(_PlainExchange):
    """The server side of one PLAIN exchange (RFC 4616) over stored SCRAM credentials."""

    def __init__(self, context: SaslContext, lookup: CredentialLookup, hashes: Sequence[str], *,
                 secret: bytes, fake_iterations: int = 10000,
                 run_blocking: RunBlocking = run_inline) -> None:
        """
        Args:
            context: the connection authenticating.
            lookup: ``lookup(bare_jid, hash_name)`` fires with the account's credential or None.
            hashes: the credential hashes to try, preferred first.
            secret: keys the fake salt used to spend the same time on unknown users.
            fake_iterations: the PBKDF2 iterations spent on unknown users.
            run_blocking: runs the PBKDF2 derivation (inline by default).
        """
        super().__init__(context)
        self._lookup = lookup
        self._hashes = tuple(hashes)
        self._secret = secret
        self._fake_iterations = fake_iterations
        self._run_blocking = run_blocking

    def _verify(self, jid: str, username: str, password: str) -> "defer.Deferred[bool]":
        d = self._find_credential(jid, list(self._hashes))
        d.addCallback(self._check, jid, password)
        return d

    def _find_credential(self, jid: str, hashes: list[str]) -> "defer.Deferred[ScramCredential | None]":
        if not hashes:
            return defer.succeed(None)
        d = defer.maybeDeferred(self._lookup, jid, hashes[0])
        d.addCallback(lambda found: found if found is not None else self._find_credential(jid, hashes[1:]))
        return d

    def _check(self, credential: ScramCredential | None, jid: str, password: str) -> "defer.Deferred[bool]":
        if credential is None:
            # Unknown user: spend the same derivation, then fail like a wrong password.
            hash_name = self._hashes[0]
            dummy = ScramCredential(hash_name, fake_salt(self._secret, hash_name, jid),
                                    self._fake_iterations, b"", b"")
            d = self._run_blocking(_password_matches, dummy, password)
            return d.addCallback(lambda _: False)
        return self._run_blocking(_password_matches, credential, password)


@implementer(ISaslExchange)
class PasswordPlainExchange(_PlainExchange):
    """A PLAIN exchange checked by a ``PasswordCheck`` (a directory bind, for instance).

    ``check`` gets the prepared localpart (nodeprep) and the password as sent; it fires
    True/False, or fails (``SaslFailure`` passes through; anything else, e.g. the
    directory being down, gives ``temporary-auth-failure``). ``on_success(username)``
    may return a Deferred that must succeed before the exchange does (account set-up).
    """

    def __init__(self, context: SaslContext, check: PasswordCheck,
                 on_success: Callable[[str], Any] | None = None) -> None:
        super().__init__(context)
        self._check_password = check
        self._on_success = on_success

    def _verify(self, jid: str, username: str, password: str) -> "defer.Deferred[bool]":
        d = defer.maybeDeferred(self._check_password, username, password)
        if self._on_success is not None:
            on_success = self._on_success

            def then(ok: bool) -> Any:
                if not ok:
                    return False
                return defer.maybeDeferred(on_success, username).addCallback(lambda _: True)

            d.addCallback(then)
        return d
