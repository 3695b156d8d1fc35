"""Accounts and their SCRAM credentials in SQL (tables ``accounts``, ``credentials``)."""

from __future__ import annotations

import time
from typing import Any, Sequence

from twisted.internet import defer
from zope.interface import implementer

from tigasepy.storage.database import Database
from tigasepy.storage.engines import DatabaseEngine
from tigasepy.storage.interfaces import AccountExists, IAccountStore, NoSuchAccount, ScramCredential


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _insert_credentials_txn(cursor: Any, engine: DatabaseEngine, jid: str,
                            credentials: Sequence[ScramCredential]) -> None:
    for c in credentials:
        cursor.execute(engine.sql(
            "INSERT INTO credentials (jid, hash_name, salt, iterations, stored_key, server_key)"
            " VALUES (?, ?, ?, ?, ?, ?)"),
            (jid, c.hash_name, bytes(c.salt), c.iterations, bytes(c.stored_key), bytes(c.server_key)))


def account_exists_txn(cursor: Any, engine: DatabaseEngine, jid: str) -> bool:
    """True when the account ``jid`` exists."""
    cursor.execute(engine.sql("SELECT 1 FROM accounts WHERE jid = ?"), (jid,))
    return cursor.fetchone() is not None


def create_account_txn(cursor: Any, engine: DatabaseEngine, jid: str,
                       credentials: Sequence[ScramCredential], created: float) -> None:
    """Create the account ``jid`` with ``credentials``.

    Raises:
        AccountExists: an account with that JID exists.
    """
    if account_exists_txn(cursor, engine, jid):
        raise AccountExists(jid)
    try:
        cursor.execute(engine.sql("INSERT INTO accounts (jid, created) VALUES (?, ?)"), (jid, created))
    except Exception as e:
        if engine.is_unique_violation(e):
            raise AccountExists(jid) from None
        raise
    _insert_credentials_txn(cursor, engine, jid, credentials)


def set_credentials_txn(cursor: Any, engine: DatabaseEngine, jid: str,
                        credentials: Sequence[ScramCredential]) -> None:
    """Replace every credential of ``jid`` with ``credentials``.

    Raises:
        NoSuchAccount: there is no account ``jid``.
    """
    if not account_exists_txn(cursor, engine, jid):
        raise NoSuchAccount(jid)
    cursor.execute(engine.sql("DELETE FROM credentials WHERE jid = ?"), (jid,))
    _insert_credentials_txn(cursor, engine, jid, credentials)


def get_credential_txn(cursor: Any, engine: DatabaseEngine, jid: str,
                       hash_name: str) -> ScramCredential | None:
    """The credential of ``jid`` for ``hash_name``, or None."""
    cursor.execute(engine.sql(
        "SELECT hash_name, salt, iterations, stored_key, server_key FROM credentials"
        " WHERE jid = ? AND hash_name = ?"), (jid, hash_name))
    row = cursor.fetchone()
    if row is None:
        return None
    name, salt, iterations, stored_key, server_key = row
    return ScramCredential(hash_name=name, salt=bytes(salt), iterations=int(iterations),
                           stored_key=bytes(stored_key), server_key=bytes(server_key))


def delete_account_txn(cursor: Any, engine: DatabaseEngine, jid: str) -> bool:
    """Delete ``jid`` and its credentials; True when it existed."""
    cursor.execute(engine.sql("DELETE FROM credentials WHERE jid = ?"), (jid,))
    cursor.execute(engine.sql("DELETE FROM accounts WHERE jid = ?"), (jid,))
    return bool(cursor.rowcount and cursor.rowcount > 0)


def list_accounts_txn(cursor: Any, engine: DatabaseEngine, domain: str | None = None) -> list[str]:
    """The sorted bare JIDs of every account, or of those in ``domain``."""
    if domain is None:
        cursor.execute(engine.sql("SELECT jid FROM accounts ORDER BY jid"))
        return [jid for (jid,) in cursor.fetchall()]
    cursor.execute(engine.sql("SELECT jid FROM accounts WHERE jid LIKE ? ESCAPE '\\' ORDER BY jid"),
                   ("%@" + _like_escape(domain),))
    # LIKE may ignore case (SQLite); the domain part must match exactly.
    return [jid for (jid,) in cursor.fetchall() if jid.partition("@")[2] == domain]


@implementer(IAccountStore)
class SqlAccountStore:
    """``IAccountStore`` in an SQL database."""

    def __init__(self, database: Database, clock: Any = None) -> None:
        """
        Args:
            database: where the tables live.
            clock: an ``IReactorTime`` for account creation stamps (wall clock if None).
        """
        self._db = database
        self._clock = clock

    def _now(self) -> float:
        return self._clock.seconds() if self._clock is not None else time.time()

    def create(self, jid: str, credentials: list[ScramCredential]) -> "defer.Deferred[None]":
        """See ``IAccountStore.create``."""
        return self._db.run_interaction("create_account", create_account_txn, self._db.engine,
                                        jid, list(credentials), self._now())

    def set_credentials(self, jid: str, credentials: list[ScramCredential]) -> "defer.Deferred[None]":
        """See ``IAccountStore.set_credentials``."""
        return self._db.run_interaction("set_credentials", set_credentials_txn, self._db.engine,
                                        jid, list(credentials))

    def get_credential(self, jid: str, hash_name: str) -> "defer.Deferred[ScramCredential | None]":
        """See ``IAccountStore.get_credential``."""
        return self._db.run_interaction("get_credential", get_credential_txn, self._db.engine,
                                        jid, hash_name)

    def exists(self, jid: str) -> "defer.Deferred[bool]":
        """See ``IAccountStore.exists``."""
        return self._db.run_interaction("account_exists", account_exists_txn, self._db.engine, jid)

    def delete(self, jid: str) -> "defer.Deferred[bool]":
        """See ``IAccountStore.delete``."""
        return self._db.run_interaction("delete_account", delete_account_txn, self._db.engine, jid)

    def list_accounts(self, domain: str | None = None) -> "defer.Deferred[list[str]]":
        """See ``IAccountStore.list_accounts``."""
        return self._db.run_interaction("list_accounts", list_accounts_txn, self._db.engine, domain)
