"""Administrative operations on a running server, one function per task.

ARCHITECTURE.md: every administrative front end (the XEP-0133 ad-hoc commands, an
admin API, the command line where a server is involved) runs the same operation
here, so an account added, removed or kicked one way is added, removed or kicked
the same way as any other. The operations validate their input, change the
stores through ``AccountManager`` and act on sessions through the session
manager's extension host; they raise the exceptions of ``auth.accounts`` and
``storage.interfaces`` (callers map them to their own error reporting).

The command line works without a running server: it deletes an account's data
with ``delete_account_and_data_txn`` (every area's ``remove_owner_txn`` in one
transaction), the offline counterpart of ``ServerAdmin.delete_user`` whose
extensions drop their data on ``AccountRemoved``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable

from twisted.internet import defer
from twisted.words.xish import domish

from tigasepy.auth.accounts import AccountManager, prepare_account_jid
from tigasepy.log_level import Logger
from tigasepy.sm.events import AccountEvent, AccountRemoved
from tigasepy.storage.engines import DatabaseEngine
from tigasepy.storage.interfaces import NoSuchAccount
from tigasepy.storage.sql import accounts as sql_accounts
from tigasepy.storage.sql import archive as sql_archive
from tigasepy.storage.sql import last_activity as sql_last_activity
from tigasepy.storage.sql import offline as sql_offline
from tigasepy.storage.sql import pep as sql_pep
from tigasepy.storage.sql import privacy as sql_privacy
from tigasepy.storage.sql import private as sql_private
from tigasepy.storage.sql import roster as sql_roster
from tigasepy.storage.sql import vcard as sql_vcard
from tigasepy.xmpp.jid import InvalidFormat, parse_jid

if TYPE_CHECKING:
    from tigasepy.sm.host import ExtensionHost
    from tigasepy.sm.session import BoundSession

#: The stream error a kicked session gets (as other servers do for an admin's kick).
KICK_CONDITION = "policy-violation"

#: The per-area SQL functions deleting one account's data, ``fn(cursor, engine, jid)``.
#: Add a new area's ``remove_owner_txn`` here; ``tigasepy user del`` runs them all.
ACCOUNT_DATA_TXNS = (
    sql_roster.remove_owner_txn,
    sql_offline.remove_owner_txn,
    sql_archive.remove_owner_txn,
    sql_privacy.remove_owner_txn,
    sql_vcard.remove_owner_txn,
    sql_private.remove_owner_txn,
    sql_last_activity.remove_owner_txn,
    sql_pep.remove_owner_txn,
)


def delete_account_and_data_txn(cursor: Any, engine: DatabaseEngine, jid: str) -> None:
    """Delete the account ``jid`` and all its data (``ACCOUNT_DATA_TXNS``) in one transaction.

    Raises:
        NoSuchAccount: there is no account ``jid``.
    """
    if not sql_accounts.delete_account_txn(cursor, engine, jid):
        raise NoSuchAccount(jid)
    for remove in ACCOUNT_DATA_TXNS:
        remove(cursor, engine, jid)


def is_admin(admins: Iterable[str], jid: str | None) -> bool:
    """True when the bare JID of ``jid`` (bare or full) is one of ``admins`` (``[server] admins``).

    Both sides are compared prepared (``Admin@Example.org`` names ``admin@example.org``);
    an entry that is not a valid account JID names nobody.
    """
    if not jid:
        return False
    try:
        parsed = parse_jid(jid)
    except InvalidFormat:
        return False
    if parsed is None or not parsed.user:
        return False
    bare = parsed.userhost()
    for entry in admins:
        try:
            if prepare_account_jid(entry) == bare:
                return True
        except ValueError:
            continue
    return False


class ServerAdmin:
    """The operations an administrator can run on a live server.

    Args:
        accounts: creates, changes and removes accounts.
        host: the session manager's extension host (sessions, events).
    """

    _log = Logger()

    def __init__(self, accounts: AccountManager, host: "ExtensionHost") -> None:
        self._accounts = accounts
        self._host = host

    # -- accounts -----------------------------------------------------------------------
    def add_user(self, jid: str, password: str) -> "defer.Deferred[str]":
        """Create the account ``jid``; fires with its prepared bare JID.

        Fails with ``InvalidAccountJID``, ``DomainNotHosted``, ``InvalidPassword`` or
        ``AccountExists``.
        """
        return self._accounts.register(jid, password)

    def change_password(self, jid: str, password: str) -> "defer.Deferred[str]":
        """Replace the password of ``jid``; fails with ``NoSuchAccount`` (and as ``add_user``)."""
        return self._accounts.set_password(jid, password)

    def delete_user(self, jid: str, before_close: Callable[[], None] | None = None) -> "defer.Deferred[str]":
        """Remove the account ``jid``: its data in every store, then its sessions.

        The extensions drop their data on ``AccountRemoved`` (roster, offline
        messages, vCard, private storage, last activity, ...). ``before_close`` runs
        after that and before the account's streams end (an in-band removal answers
        its IQ there). Fails with ``NoSuchAccount`` (and ``InvalidAccountJID``,
        ``DomainNotHosted``).
        """
        def removed(bare: str) -> str:
            self._host.notify(AccountRemoved, AccountEvent(bare))
            if before_close is not None:
                before_close()
            for session in self._host.sessions(bare):
                session.handle.close("not-authorized", "The account was removed")
            self._log.info("account {jid} removed", jid=bare)
            return bare

        return self._accounts.remove(jid).addCallback(removed)

    # -- sessions -----------------------------------------------------------------------
    def online_users(self, limit: int | None = None) -> list[str]:
        """The sorted bare JIDs with at least one bound resource (the first ``limit``)."""
        users = sorted({session.bare for session in self._host.all_sessions()})
        return users if limit is None else users[:max(0, limit)]

    def online_count(self) -> int:
        """How many accounts have at least one bound resource."""
        return len({session.bare for session in self._host.all_sessions()})

    def end_sessions(self, jid: str) -> int:
        """End the sessions of ``jid``: every resource for a bare JID, one for a full JID.

        Returns:
            How many sessions were ended (0 when none was bound).

        Raises:
            InvalidAccountJID: not a JID with a localpart.
        """
        sessions = self._sessions_of(jid)
        for session in sessions:
            session.handle.close(KICK_CONDITION, "Your session was ended by an administrator")
        if sessions:
            self._log.info("{count} session(s) of {jid} ended by an administrator",
                           count=len(sessions), jid=jid)
        return len(sessions)

    def _sessions_of(self, jid: str) -> "list[BoundSession]":
        from tigasepy.auth.accounts import InvalidAccountJID

        try:
            parsed = parse_jid(jid.strip())
        except InvalidFormat:
            parsed = None
        if parsed is None or not parsed.user:
            raise InvalidAccountJID(f"{jid!r} is not an account JID")
        if parsed.resource:
            session = self._host.session(parsed.full())
            return [session] if session is not None else []
        return self._host.sessions(parsed.userhost())

    # -- configuration ------------------------------------------------------------------
    def reload_configuration(self) -> Any:
        """Read the configuration file again and apply it without a restart.

        Returns the ``tigasepy.reload.ReloadReport``: what changed, what needs a restart,
        or why the file was refused (then nothing changed).
        """
        report = self._host.reload_configuration()
        self._log.info("configuration reload requested by an administrator: {summary}",
                       summary=report.summary())
        return report

    def announce(self, body: str, subject: str | None = None, domains: Collection[str] | None = None) -> int:
        """Send a headline message from the server to every bound session.

        Args:
            body: the announcement.
            subject: an optional subject.
            domains: only sessions of accounts in these domains (all when None).

        Returns:
            How many sessions it was sent to.
        """
        sent = 0
        for session in list(self._host.all_sessions()):
            domain = session.jid.host
            if domains is not None and domain not in domains:
                continue
            message = domish.Element((None, "message"))
            message["type"] = "headline"
            message["from"] = domain
            message["to"] = session.full
            if subject:
                message.addElement("subject", content=subject)
            message.addElement("body", content=body)
            session.send(message)
            sent += 1
        self._log.info("announcement sent to {count} session(s)", count=sent)
        return sent
