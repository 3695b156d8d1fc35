"""The LDAP authenticator (ldap3): PLAIN, checked by binding to the directory as the user.

An LDAP directory keeps password hashes we cannot run SCRAM against, so this
authenticator offers PLAIN only (and the authentication service offers PLAIN only
over TLS). The password goes to the directory inside TLS (``ldaps://`` or StartTLS,
certificate and host name checked) and is never stored or logged.

One check, on a pooled connection, in the reactor's thread pool (ldap3 blocks):

- ``bind_mode = "direct"``: bind as ``dn_template`` with ``{user}`` replaced by the
  RFC 4514-escaped user name; then the ``group_dn`` / ``require_filter`` checks run
  with the user's own rights.
- ``bind_mode = "search"``: bind as the service account (``bind_dn``; anonymous when
  none), search ``search_base`` for exactly one entry matching ``search_filter`` with
  ``{user}`` RFC 4515-escaped, run the group / filter checks with the service
  account's rights, then bind as the entry found.

Outcomes: the bind succeeded and the checks passed -> success; wrong password,
unknown user or a user not allowed -> ``not-authorized``; the directory unreachable,
slow (``timeout_s`` for the whole check) or answering with an error -> one warning
line and ``temporary-auth-failure`` (fail closed). A pooled connection the directory
dropped is replaced once without an error to anyone.

On a successful login the account row is created in the ``IAccountStore`` when
missing, without credentials (see ``LdapAuthenticator``).
"""

from __future__ import annotations

import math
import re
import ssl
import threading
import unicodedata
import warnings
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from tigasepy.auth.plain import PasswordPlainExchange, RunBlocking
from tigasepy.interfaces import IAuthenticator, ISaslExchange, SaslContext, SaslFailure
from tigasepy.log_level import Logger
from tigasepy.storage.interfaces import AccountExists, IAccountStore
from tigasepy.storage.outage import log_failure

#: LDAP result codes (RFC 4511 4.1.9) that reject the credentials rather than report
#: trouble: noSuchObject, invalidDNSyntax, inappropriateAuthentication,
#: invalidCredentials, insufficientAccessRights, unwillingToPerform (e.g. locked).
_REJECTING_CODES = frozenset({32, 34, 48, 49, 50, 53})
_SUCCESS = 0
_SIZE_LIMIT_EXCEEDED = 4
_NO_SUCH_OBJECT = 32

#: Attributes whose values are DNs (the member's DN goes in the group filter);
#: any other (``memberUid``) holds the user name.
_DN_MEMBER_ATTRIBUTES = frozenset({"member", "uniquemember", "roleoccupant", "owner"})


class DirectoryUnavailable(Exception):
    """The directory could not answer (down, refused TLS, timed out, busy or misconfigured)."""


# -- escaping --------------------------------------------------------------------------------

def escape_filter_value(text: str) -> str:
    """``text`` as an assertion value in an LDAP filter (RFC 4515 3): ``* ( ) \\ NUL`` escaped."""
    out = []
    for char in text:
        if char in "*()\\\0":
            out.append("\\%02x" % ord(char))
        else:
            out.append(char)
    return "".join(out)


def escape_dn_value(text: str) -> str:
    """``text`` as an attribute value in a DN (RFC 4514 2.4).

    Escapes ``" + , ; < > \\`` and ``=``, a leading ``#`` or space, a trailing space,
    and NUL (as ``\\00``).
    """
    out = []
    for index, char in enumerate(text):
        if char == "\0":
            out.append("\\00")
        elif char in '"+,;<>\\=':
            out.append("\\" + char)
        elif char == " " and (index == 0 or index == len(text) - 1):
            out.append("\\ ")
        elif char == "#" and index == 0:
            out.append("\\#")
        else:
            out.append(char)
    return "".join(out)


def fill(template: str, value: str) -> str:
    """``template`` with every ``{user}`` replaced by ``value`` (no other brace is special)."""
    return template.replace("{user}", value)


# -- settings ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class LdapSettings:
    """What the authenticator needs at run time (``[auth.ldap]`` with the files read)."""

    urls: tuple[str, ...]
    bind_mode: str = "direct"
    dn_template: str = ""
    search_base: str = ""
    search_filter: str = "(&(objectClass=inetOrgPerson)(uid={user}))"
    bind_dn: str = ""
    bind_password: str = ""
    starttls: bool = True
    ca_file: str = ""
    tls_verify: bool = True
    group_dn: str = ""
    group_member_attribute: str = "member"
    require_filter: str = ""
    connect_timeout_s: float = 5.0
    timeout_s: float = 10.0
    pool_size: int = 4

    def __repr__(self) -> str:  # never show the service account's password
        return f"LdapSettings(urls={self.urls!r}, bind_mode={self.bind_mode!r})"

    @classmethod
    def from_config(cls, config: Any, bind_password: str = "", ca_file: str = "") -> "LdapSettings":
        """From an ``LdapConfig``; ``bind_password`` read from its file, ``ca_file`` resolved."""
        return cls(urls=tuple(config.urls), bind_mode=config.bind_mode, dn_template=config.dn_template,
                   search_base=config.search_base, search_filter=config.search_filter,
                   bind_dn=config.bind_dn, bind_password=bind_password, starttls=config.starttls,
                   ca_file=ca_file, tls_verify=config.tls_verify, group_dn=config.group_dn,
                   group_member_attribute=config.group_member_attribute,
                   require_filter=config.require_filter, connect_timeout_s=config.connect_timeout_s,
                   timeout_s=config.timeout_s, pool_size=config.pool_size)


# -- the blocking part (runs in a worker thread) --------------------------------------------

OK = "ok"              # bound as the user, allowed to log in
INVALID = "invalid"    # no such user or wrong password
DENIED = "denied"      # right password, but not allowed (group / filter)
AMBIGUOUS = "ambiguous"  # the search found several entries


class _Connection:
    """An ldap3 connection and whom it is bound as (None: anonymous or unknown)."""

    def __init__(self, connection: Any) -> None:
        self.ldap = connection
        self.identity: str | None = None


class _Slot:
    """One checked-out place in the pool; carries the connection between uses."""

    def __init__(self, connection: _Connection | None) -> None:
        self.connection = connection


def _plausible_name(username: str) -> bool:
    """False for names with spaces or control characters (NUL included).

    Nodeprep lets none through from XMPP; refusing them here as well keeps the
    directory's matching rules (RFC 4518 drops leading, trailing and repeated spaces:
    ``" alice"`` matches ``alice``) from giving one entry several XMPP names.
    """
    return not any(char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")
                   for char in username)


def _describe(error: BaseException) -> str:
    """One short line for ``error`` (ldap3 wraps messages in tuple reprs: unwrap them)."""
    text = " ".join(str(error).split()) or type(error).__name__
    while True:
        unwrapped = re.sub(r"""^\(+["']|["'],?\)+$""", "", text)
        if unwrapped == text:
            break
        text = unwrapped
    # ldap3's host-name mismatch quotes the whole certificate: keep the point.
    text = re.sub(r"certificate \{.*\} doesn't match any name in", "the certificate doesn't match any name in", text)
    return text if len(text) <= 300 else text[:297] + "..."


class LdapDirectory:
    """The blocking directory client: ``check`` runs on a worker thread."""

    def __init__(self, settings: LdapSettings) -> None:
        # Imported here: only deployments using LDAP need the package. ldap3 2.9 imports
        # names pyasn1 deprecated; that is not ours to report on every start.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import ldap3
            from ldap3.core import exceptions as ldap_errors

        self._ldap3 = ldap3

        self._errors = ldap_errors
        self.settings = settings
        self._target()  # settings errors (an unreadable CA file) show at start, not at a login
        self._credential_rejections = (
            ldap_errors.LDAPPasswordIsMandatoryError, ldap_errors.LDAPSASLPrepError,
            ldap_errors.LDAPUserNameIsMandatoryError, ldap_errors.LDAPUserNameNotAllowedError,
            ldap_errors.LDAPInvalidDnError, ldap_errors.LDAPInvalidValueError)

    @property
    def where(self) -> str:
        """The directory's URL(s), for log lines."""
        return ", ".join(self.settings.urls)

    def _target(self) -> Any:
        """Fresh ldap3 server objects for one connection: ldap3 remembers an address that
        failed and refuses it for a while ("invalid server address"); a directory that
        is back must be usable at the next login."""
        servers = [self._server(url) for url in self.settings.urls]
        if len(servers) == 1:
            return servers[0]
        # FIRST: the first that answers; one pass over the list, never loop forever.
        return self._ldap3.ServerPool(servers, self._ldap3.FIRST, active=1, exhaust=False)

    def _server(self, url: str) -> Any:
        ldap3 = self._ldap3
        settings = self.settings
        scheme, _, rest = url.partition("://")
        use_ssl = scheme.lower() == "ldaps"
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED if settings.tls_verify else ssl.CERT_NONE,
                        ca_certs_file=settings.ca_file or None,
                        version=None)
        hostport = rest.split("/", 1)[0]
        return ldap3.Server(f"{scheme}://{hostport}", use_ssl=use_ssl, tls=tls, get_info=ldap3.NONE,
                            connect_timeout=settings.connect_timeout_s)

    # -- connections ------------------------------------------------------------------
    def _open(self) -> _Connection:
        ldap3 = self._ldap3
        connection = ldap3.Connection(
            self._target(), auto_bind=ldap3.AUTO_BIND_NONE, client_strategy=ldap3.SYNC,
            # ldap3 packs it into SO_RCVTIMEO as whole seconds; the overall deadline is timeout_s.
            receive_timeout=max(1, math.ceil(self.settings.timeout_s)), raise_exceptions=False, read_only=True,
            auto_referrals=False, check_names=True)
        try:
            connection.open(read_server_info=False)
            if self.settings.starttls and not connection.server.ssl:
                if not connection.start_tls(read_server_info=False):
                    raise DirectoryUnavailable(f"StartTLS refused by {connection.server.host}")
        except BaseException:
            self._close(connection)
            raise
        return _Connection(connection)

    @staticmethod
    def _close(connection: Any) -> None:
        try:
            connection.unbind()
        except Exception:  # noqa: BLE001 - a broken connection is being dropped anyway
            pass

    def close(self, slot: _Slot) -> None:
        """Drop the slot's connection (blocking: sends an unbind)."""
        connection, slot.connection = slot.connection, None
        if connection is not None:
            self._close(connection.ldap)

    # -- one check ----------------------------------------------------------------------
    def check(self, slot: _Slot, username: str, password: str) -> tuple[str, str]:
        """Check ``password`` for ``username`` on the slot's connection (opened if needed).

        Returns ``(verdict, dn)``: ``OK``, ``INVALID``, ``DENIED`` or ``AMBIGUOUS``.

        Raises:
            DirectoryUnavailable: the directory could not answer.
        """
        if not password or not username:
            return INVALID, ""  # an empty password would be an "unauthenticated bind" (RFC 4513 5.1.2)
        if not _plausible_name(username):
            return INVALID, ""
        for attempt in (1, 2):
            reused = slot.connection is not None
            try:
                if slot.connection is None:
                    slot.connection = self._open()
                return self._check_on(slot.connection, username, password)
            except self._errors.LDAPException as e:
                self.close(slot)
                if reused and attempt == 1 and isinstance(e, self._errors.LDAPCommunicationError):
                    continue  # the directory dropped this pooled connection: one fresh try
                raise DirectoryUnavailable(_describe(e)) from None
            except DirectoryUnavailable:
                self.close(slot)
                raise
            except OSError as e:
                self.close(slot)
                raise DirectoryUnavailable(_describe(e)) from None
        raise AssertionError("unreachable")

    def _check_on(self, connection: _Connection, username: str, password: str) -> tuple[str, str]:
        settings = self.settings
        if settings.bind_mode == "search":
            self._bind_service(connection)
            found = self._find(connection, username)
            if found in (INVALID, AMBIGUOUS):
                return found, ""
            dn = found
            if not self._allowed(connection, dn, username):
                return DENIED, dn
            if not self._bind_user(connection, dn, password):
                return INVALID, dn
            return OK, dn
        dn = fill(settings.dn_template, escape_dn_value(username))
        if not self._bind_user(connection, dn, password):
            return INVALID, dn
        if not self._allowed(connection, dn, username):
            return DENIED, dn
        return OK, dn

    def _result(self, connection: _Connection) -> tuple[int, str]:
        result = connection.ldap.result or {}
        return int(result.get("result", -1)), str(result.get("description", "no answer"))

    def _bind_service(self, connection: _Connection) -> None:
        settings = self.settings
        wanted = settings.bind_dn or ""
        if connection.identity == wanted:
            return
        ldap = connection.ldap
        connection.identity = None
        if settings.bind_dn:
            ldap.authentication = self._ldap3.SIMPLE
            ldap.user, ldap.password = settings.bind_dn, settings.bind_password
        else:
            ldap.authentication = self._ldap3.ANONYMOUS
            ldap.user, ldap.password = None, None
        try:
            bound = ldap.bind(read_server_info=False)
        finally:
            ldap.password = None
        if not bound:
            code, description = self._result(connection)
            raise DirectoryUnavailable(f"the service account {wanted or '(anonymous)'} cannot bind: "
                                       f"{description} ({code})")
        connection.identity = wanted

    def _bind_user(self, connection: _Connection, dn: str, password: str) -> bool:
        ldap = connection.ldap
        connection.identity = None  # a failed bind leaves the connection anonymous (RFC 4511 4.2.1)
        ldap.authentication = self._ldap3.SIMPLE
        ldap.user, ldap.password = dn, password
        try:
            bound = ldap.bind(read_server_info=False)
        except self._credential_rejections:
            return False
        finally:
            ldap.password = None
        if bound:
            connection.identity = dn
            return True
        code, description = self._result(connection)
        if code in _REJECTING_CODES:
            return False
        raise DirectoryUnavailable(f"bind answered {description} ({code})")

    def _search(self, connection: _Connection, base: str, search_filter: str, scope: Any,
                size_limit: int = 0) -> tuple[int, str, list[str]]:
        ldap = connection.ldap
        ldap.search(base, search_filter, search_scope=scope, attributes=[self._ldap3.NO_ATTRIBUTES],
                    size_limit=size_limit, time_limit=max(1, int(self.settings.timeout_s)))
        code, description = self._result(connection)
        entries = [r["dn"] for r in (ldap.response or []) if r.get("type") == "searchResEntry"]
        return code, description, entries

    def _find(self, connection: _Connection, username: str) -> str:
        settings = self.settings
        search_filter = fill(settings.search_filter, escape_filter_value(username))
        code, description, entries = self._search(connection, settings.search_base, search_filter,
                                                  self._ldap3.SUBTREE, size_limit=2)
        if code not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED):
            raise DirectoryUnavailable(f"searching {settings.search_base} answered {description} ({code})")
        if not entries:
            return INVALID
        if len(entries) > 1 or code == _SIZE_LIMIT_EXCEEDED:
            return AMBIGUOUS
        return entries[0]

    def _allowed(self, connection: _Connection, dn: str, username: str) -> bool:
        settings = self.settings
        if settings.require_filter:
            code, description, entries = self._search(
                connection, dn, fill(settings.require_filter, escape_filter_value(username)),
                self._ldap3.BASE)
            if code not in (_SUCCESS, _NO_SUCH_OBJECT):
                raise DirectoryUnavailable(f"checking require_filter answered {description} ({code})")
            if not entries:
                return False
        if settings.group_dn:
            attribute = settings.group_member_attribute
            value = dn if attribute.lower() in _DN_MEMBER_ATTRIBUTES else username
            code, description, entries = self._search(
                connection, settings.group_dn, f"({attribute}={escape_filter_value(value)})",
                self._ldap3.BASE)
            if code == _NO_SUCH_OBJECT:
                # Either the group is missing or the bound identity may not see it: nobody may log in.
                raise DirectoryUnavailable(f"group_dn {settings.group_dn} not found (or not readable)")
            if code != _SUCCESS:
                raise DirectoryUnavailable(f"checking group_dn answered {description} ({code})")
            if not entries:
                return False
        return True


# -- the pool and the authenticator (reactor side) --------------------------------------------

class _Pool:
    """At most ``size`` connections in use; idle ones kept for the next check."""

    def __init__(self, size: int) -> None:
        self._semaphore = defer.DeferredSemaphore(size)
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def acquire(self) -> "defer.Deferred[_Slot]":
        d = self._semaphore.acquire()
        return d.addCallback(lambda _: _Slot(self._take_idle()))

    def _take_idle(self) -> _Connection | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def release(self, slot: _Slot) -> None:
        if slot.connection is not None:
            with self._lock:
                self._idle.append(slot.connection)
            slot.connection = None
        self._semaphore.release()

    def drain(self) -> list[_Connection]:
        """Forget and return the idle connections (to close them)."""
        with self._lock:
            idle, self._idle = self._idle, []
        return idle


@implementer(IAuthenticator)
class LdapAuthenticator:
    """``IAuthenticator`` over an LDAP directory: PLAIN only, checked by a bind.

    Account rows: a user who exists only in the directory gets a row in the
    ``IAccountStore`` (``accounts``) on the first successful login, with no
    credentials. The rest of the server then treats them like any account: they
    exist for message delivery and offline storage (``SessionManager.account_exists``)
    even when no session is bound and even while the directory is down, their roster,
    offline messages and other data live in the regular store, and the command line
    lists and removes them. The row holds no SCRAM keys, so nobody can log in with it
    through the internal authenticator.
    """

    _log = Logger()

    def __init__(self, settings: LdapSettings, clock: Any, run_blocking: RunBlocking, *,
                 accounts: IAccountStore | None = None,
                 directory: Any = None) -> None:
        """
        Args:
            settings: the directory and the checks.
            clock: an ``IReactorTime`` (the deadline of each check).
            run_blocking: runs the blocking directory calls (``plain.in_thread_pool(reactor)``).
            accounts: where account rows are created on first login (None: not created).
            directory: the blocking client (an ``LdapDirectory`` for ``settings`` if None).
        """
        self.settings = settings
        self._clock = clock
        self._run_blocking = run_blocking
        self._accounts = accounts
        self._directory = directory if directory is not None else LdapDirectory(settings)
        self._pool = _Pool(settings.pool_size)
        self._down_since: float | None = None

    # -- IAuthenticator -----------------------------------------------------------------
    def mechanisms(self, context: SaslContext) -> list[str]:
        """See ``IAuthenticator.mechanisms``: PLAIN (the service offers it over TLS only)."""
        return ["PLAIN"]

    def start(self, mechanism: str, context: SaslContext) -> ISaslExchange:
        """See ``IAuthenticator.start``."""
        if mechanism != "PLAIN":
            raise SaslFailure("invalid-mechanism")
        return PasswordPlainExchange(context, self.check_password,
                                     on_success=lambda user: self._ensure_account(user, context.domain))

    # -- the check ----------------------------------------------------------------------
    def check_password(self, username: str, password: str) -> "defer.Deferred[bool]":
        """Fires True when the directory accepts ``password`` for ``username`` and the user
        may log in, False when not; fails with ``SaslFailure("temporary-auth-failure")``
        (after one warning line) when the directory cannot answer in ``timeout_s``."""
        outcome: defer.Deferred = defer.Deferred()
        timeout = self.settings.timeout_s
        acquiring = self._pool.acquire()
        state: dict[str, Any] = {"work": None}

        def expired() -> None:
            if state["work"] is None:
                acquiring.cancel()  # still waiting for a free connection
                reason = f"no free connection within {timeout:g} s (all {self.settings.pool_size} busy)"
            else:
                reason = f"no answer within {timeout:g} s"
            if not outcome.called:
                outcome.errback(DirectoryUnavailable(reason))

        timer = self._clock.callLater(timeout, expired)

        def got_slot(slot: _Slot) -> None:
            work = defer.maybeDeferred(self._run_blocking, self._directory.check, slot, username, password)
            state["work"] = work

            def finished(result: Any) -> Any:
                self._pool.release(slot)
                return result

            work.addBoth(finished)
            work.addBoth(deliver)

        def deliver(result: Any) -> None:
            if timer.active():
                timer.cancel()
            if outcome.called:
                return None  # the deadline already answered; the late result is dropped
            if isinstance(result, Failure):
                outcome.errback(result)
            else:
                outcome.callback(result)
            return None

        def not_acquired(failure: Failure) -> None:
            failure.trap(defer.CancelledError)  # the deadline gave up waiting; it answered already

        acquiring.addCallbacks(got_slot, not_acquired)
        outcome.addCallbacks(self._verdict, self._unavailable, callbackArgs=(username,),
                             errbackArgs=(username,))
        return outcome

    def _verdict(self, result: tuple[str, str], username: str) -> bool:
        verdict, dn = result
        self._recovered()
        if verdict == OK:
            return True
        if verdict == DENIED:
            self._log.info("LDAP: {user!r} ({dn}) may not log in (group_dn / require_filter)",
                           user=username, dn=dn)
        elif verdict == AMBIGUOUS:
            self._log.warn("LDAP: search_filter matches several entries for {user!r}; refused",
                           user=username)
        return False

    def _unavailable(self, failure: Any, username: str) -> None:
        if not failure.check(DirectoryUnavailable):
            log_failure(self._log, failure, "LDAP check for {user!r} failed", user=username)
            raise SaslFailure("temporary-auth-failure")
        if self._down_since is None:
            self._down_since = self._clock.seconds()
        self._log.warn("LDAP directory {where} unavailable ({reason}): login of {user!r} refused with "
                       "temporary-auth-failure", where=self._directory.where, reason=failure.value,
                       user=username)
        raise SaslFailure("temporary-auth-failure")

    def _recovered(self) -> None:
        if self._down_since is not None:
            self._log.info("LDAP directory {where} available again (after {seconds:.0f} s)",
                           where=self._directory.where, seconds=self._clock.seconds() - self._down_since)
            self._down_since = None

    def _ensure_account(self, username: str, domain: str) -> Any:
        if self._accounts is None:
            return None
        jid = f"{username}@{domain}"

        def created(_: Any) -> None:
            self._log.info("account {jid} created for a directory user on first login", jid=jid)

        def failed(failure: Any) -> None:
            if failure.check(AccountExists):
                return None
            log_failure(self._log, failure, "cannot create the account row of {jid}", jid=jid)
            raise SaslFailure("temporary-auth-failure")

        d = defer.maybeDeferred(self._accounts.exists, jid)
        d.addCallback(lambda exists: None if exists else
                      defer.maybeDeferred(self._accounts.create, jid, []).addCallback(created))
        return d.addErrback(failed)

    def close(self) -> "defer.Deferred[None]":
        """Close the idle connections (on shutdown)."""
        idle = self._pool.drain()
        if not idle:
            return defer.succeed(None)
        return self._run_blocking(_close_all, self._directory, idle)


def _close_all(directory: LdapDirectory, connections: list[_Connection]) -> None:
    for connection in connections:
        directory.close(_Slot(connection))


def security_warnings(settings: LdapSettings) -> list[str]:
    """The SECURITY lines to log at start for ``settings`` (empty when nothing is relaxed)."""
    lines = []
    if not settings.tls_verify:
        lines.append("SECURITY: the LDAP directory's certificate is not checked (auth.ldap.tls_verify = false)")
    for url in settings.urls:
        if url.lower().startswith("ldap://") and not settings.starttls:
            lines.append(f"SECURITY: passwords go to {url} in clear text (auth.ldap.starttls = false)")
    return lines


__all__ = ["DirectoryUnavailable", "LdapAuthenticator", "LdapDirectory", "LdapSettings",
           "escape_dn_value", "escape_filter_value", "security_warnings"]
