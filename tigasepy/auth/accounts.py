"""Account management: register, change password, remove, list. Shared by the CLI and the server.

Passwords exist only in memory while their SCRAM credentials are derived; they
are never stored or logged. JIDs are prepared bare JIDs (``alice@example.org``).
"""

from __future__ import annotations

from typing import Any, Collection, Sequence

from twisted.internet import defer

from tigasepy.auth.plain import RunBlocking, run_inline
from tigasepy.auth.scram import HASHES, make_credential, saslprep
from tigasepy.log_level import Logger
from tigasepy.storage.interfaces import IAccountStore, NoSuchAccount, ScramCredential
from tigasepy.xmpp.jid import InvalidFormat, parse_jid

#: Longest password accepted, in characters.
MAX_PASSWORD_CHARS = 1024


class InvalidAccountJID(ValueError):
    """Not a JID an account can have (no localpart, a resource, or malformed)."""


class InvalidPassword(ValueError):
    """A password that cannot be used (empty, too long, or prohibited characters)."""


class DomainNotHosted(ValueError):
    """The JID's domain is not one this server hosts."""


def prepare_account_jid(text: str, domains: Collection[str] | None = None) -> str:
    """The prepared bare JID of an account, e.g. ``"Alice@Example.org"`` -> ``"alice@example.org"``.

    Args:
        text: the JID as typed.
        domains: when given, the domain must be one of these.

    Raises:
        InvalidAccountJID: malformed, no localpart, or with a resource.
        DomainNotHosted: the domain is not in ``domains``.
    """
    try:
        jid = parse_jid(text.strip())
    except InvalidFormat as e:
        raise InvalidAccountJID(f"{text!r} is not a valid JID ({e})") from None
    if jid is None or not jid.user:
        raise InvalidAccountJID(f"{text!r} is not an account JID (user@domain)")
    if jid.resource is not None:
        raise InvalidAccountJID(f"{text!r} has a resource; give the bare JID (user@domain)")
    if domains is not None and jid.host not in domains:
        raise DomainNotHosted(f"domain {jid.host} is not hosted here (server.domains)")
    return jid.userhost()


def prepare_password(password: str) -> str:
    """The password as SCRAM will hash it (SASLprep, stored-string rules).

    Raises:
        InvalidPassword: empty, longer than ``MAX_PASSWORD_CHARS``, or not SASLprep-able.
    """
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidPassword(f"password longer than {MAX_PASSWORD_CHARS} characters")
    try:
        prepared = saslprep(password, allow_unassigned=False)
    except ValueError as e:
        raise InvalidPassword(f"password not allowed: {e}") from None
    if not prepared:
        raise InvalidPassword("empty password")
    return prepared


def make_credentials(password: str, hashes: Sequence[str], iterations: int) -> list[ScramCredential]:
    """One SCRAM credential per hash for ``password`` (runs PBKDF2 once per hash).

    Raises:
        InvalidPassword: see ``prepare_password``.
    """
    prepared = prepare_password(password)
    return [make_credential(h, prepared, iterations) for h in hashes]


class AccountManager:
    """Creates, changes and removes accounts in an ``IAccountStore``."""

    _log = Logger()

    def __init__(self, store: IAccountStore, hashes: Sequence[str], iterations: int, *,
                 domains: Collection[str] | None = None, owned_stores: Sequence[Any] = (),
                 run_blocking: RunBlocking = run_inline) -> None:
        """
        Args:
            store: the account store.
            hashes: the SCRAM hashes to keep credentials for.
            iterations: the PBKDF2 iteration count for new credentials.
            domains: when given, accounts can only be in these domains.
            owned_stores: stores with a ``remove_owner(jid)`` (roster, offline, ...)
                emptied when an account is removed.
            run_blocking: runs the PBKDF2 derivation (``plain.in_thread_pool(reactor)``
                keeps it off the reactor thread).
        """
        unknown = [h for h in hashes if h not in HASHES]
        if unknown or not hashes:
            raise ValueError(f"unsupported SCRAM hashes: {unknown or 'none given'}")
        self._store = store
        self._hashes = tuple(hashes)
        self._iterations = iterations
        self._domains = frozenset(domains) if domains is not None else None
        self._owned_stores = tuple(owned_stores)
        self._run_blocking = run_blocking

    def _credentials(self, password: str) -> "defer.Deferred[list[ScramCredential]]":
        try:
            prepare_password(password)
        except InvalidPassword as e:
            return defer.fail(e)
        return self._run_blocking(make_credentials, password, self._hashes, self._iterations)

    def register(self, jid: str, password: str) -> "defer.Deferred[str]":
        """Create the account ``jid`` with ``password``.

        Returns:
            A Deferred firing with the prepared bare JID; it fails with
            ``InvalidAccountJID``, ``DomainNotHosted``, ``InvalidPassword`` or
            ``AccountExists``.
        """
        try:
            bare = prepare_account_jid(jid, self._domains)
        except ValueError as e:
            return defer.fail(e)
        d = self._credentials(password)
        d.addCallback(lambda creds: self._store.create(bare, creds))
        d.addCallback(lambda _: self._log.info("account {jid} created", jid=bare))
        return d.addCallback(lambda _: bare)

    def set_password(self, jid: str, password: str) -> "defer.Deferred[str]":
        """Replace the password of ``jid``; fails with ``NoSuchAccount`` if there is none."""
        try:
            bare = prepare_account_jid(jid, self._domains)
        except ValueError as e:
            return defer.fail(e)
        d = self._credentials(password)
        d.addCallback(lambda creds: self._store.set_credentials(bare, creds))
        d.addCallback(lambda _: self._log.info("password of {jid} changed", jid=bare))
        return d.addCallback(lambda _: bare)

    def remove(self, jid: str) -> "defer.Deferred[str]":
        """Remove the account ``jid`` and its data in the owned stores.

        Fails with ``NoSuchAccount`` if there is no such account.
        """
        try:
            bare = prepare_account_jid(jid, self._domains)
        except ValueError as e:
            return defer.fail(e)

        def removed(existed: bool) -> Any:
            if not existed:
                raise NoSuchAccount(bare)
            self._log.info("account {jid} removed", jid=bare)
            return defer.gatherResults([defer.maybeDeferred(s.remove_owner, bare)
                                        for s in self._owned_stores], consumeErrors=True)

        d = self._store.delete(bare)
        d.addCallback(removed)
        return d.addCallback(lambda _: bare)

    def exists(self, jid: str) -> "defer.Deferred[bool]":
        """Fires with True when the account ``jid`` exists (False for an invalid JID)."""
        try:
            bare = prepare_account_jid(jid)
        except ValueError:
            return defer.succeed(False)
        return self._store.exists(bare)

    def list(self, domain: str | None = None) -> "defer.Deferred[list[str]]":
        """Fires with the sorted bare JIDs of the accounts (of ``domain`` when given)."""
        return self._store.list_accounts(domain)
