"""Database engines: what differs between SQLite and PostgreSQL, in one place.

Stores write their SQL once, with ``?`` placeholders and the upsert built by
``DatabaseEngine.upsert``; the engine turns that into what its DB-API driver
expects. Where a schema delta needs other DDL on one engine, a
``NNN_name.<engine name>.sql`` file sits beside the portable one (see ``migrate``):
``001_initial.postgres.sql`` for ``PostgresEngine``.

Besides SQL dialect, an engine classifies driver errors for ``Database``: a unique
violation (``is_unique_violation``), an error worth running the whole transaction
again (``is_retryable``: serialization failure, deadlock), and a lost or refused
connection (``is_disconnect``).
"""

from __future__ import annotations

import abc
import functools
import re
import sqlite3
from pathlib import Path
from typing import Any, Mapping, Sequence


class DatabaseEngine(abc.ABC):
    """The engine-specific parts of talking to one kind of database."""

    #: Short name; also selects ``NNN_name.<name>.sql`` schema overrides.
    name: str = ""

    #: The DB-API module adbapi imports (``"sqlite3"``, ``"psycopg"``).
    module_name: str = ""

    @abc.abstractmethod
    def pool_arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments for ``adbapi.ConnectionPool`` (without the module).

        Includes the ``cp_*`` pool options suited to the engine.
        """

    @abc.abstractmethod
    def connect(self) -> Any:
        """Open a synchronous, ready-to-use DB-API connection (for the command line)."""

    def on_connect(self, connection: Any) -> None:
        """Prepare a freshly opened connection (pragmas, session settings)."""

    def begin(self, cursor: Any) -> None:
        """Start the transaction an interaction runs in (the commit is the caller's)."""

    def sql(self, text: str) -> str:
        """Convert ``text`` written with ``?`` placeholders to the driver's parameter style."""
        return text

    @staticmethod
    def placeholders(count: int) -> str:
        """``count`` comma-separated ``?`` placeholders (before ``sql`` conversion)."""
        return ", ".join("?" * count)

    def upsert(self, table: str, key_columns: Sequence[str], columns: Sequence[str],
               update: Mapping[str, str] | None = None) -> str:
        """An INSERT of ``columns`` that updates the row instead when ``key_columns`` clash.

        Args:
            table: the table name.
            key_columns: the columns of the unique key that may conflict.
            columns: every inserted column, keys included, in parameter order.
            update: SQL expressions to assign on conflict, by column; by default every
                non-key column takes the inserted value (``excluded.col``).

        Returns:
            The statement, already in the driver's parameter style.
        """
        if update is None:
            update = {c: f"excluded.{c}" for c in columns if c not in key_columns}
        assignments = ", ".join(f"{column} = {expr}" for column, expr in update.items())
        conflict = "DO NOTHING" if not assignments else f"DO UPDATE SET {assignments}"
        return self.sql(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({self.placeholders(len(columns))})"
            f" ON CONFLICT ({', '.join(key_columns)}) {conflict}")

    def insert_returning_id(self, cursor: Any, table: str, columns: Sequence[str],
                            values: Sequence[Any], id_column: str = "id") -> int:
        """Insert one row and return its generated ``id_column`` value."""
        cursor.execute(self.sql(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({self.placeholders(len(columns))})"
            f" RETURNING {id_column}"), tuple(values))
        (row_id,) = cursor.fetchone()
        return int(row_id)

    @abc.abstractmethod
    def is_unique_violation(self, error: BaseException) -> bool:
        """True when ``error`` is the driver's unique/primary-key constraint violation."""

    @property
    @abc.abstractmethod
    def error_class(self) -> type[Exception]:
        """The driver's base ``Error`` class (DB-API), for callers that report any driver error."""

    def is_retryable(self, error: BaseException) -> bool:
        """True when the transaction failed only because of concurrent ones and may be rerun."""
        return False

    def is_disconnect(self, error: BaseException, connection: Any) -> bool:
        """True when ``error`` means the connection is unusable (or could not be opened).

        Args:
            error: what the driver raised.
            connection: the connection in use, None when opening one failed.
        """
        return False

    def lock_schema(self, cursor: Any) -> None:
        """Serialise schema upgrades: held until the current transaction ends."""

    def describe(self) -> str:
        """Where the database is, for messages and logs (never with a password)."""
        return self.name

    def split_script(self, script: str) -> list[str]:
        """Split a schema delta into statements (``;`` at the end of a line ends one).

        Lines starting with ``--`` are comments. Deltas must not put ``;`` at the end of
        a line inside a statement (no triggers or function bodies spanning lines).
        """
        statements: list[str] = []
        current: list[str] = []
        for line in script.splitlines():
            if line.strip().startswith("--"):
                continue
            current.append(line)
            if line.rstrip().endswith(";"):
                statement = "\n".join(current).strip().rstrip(";").strip()
                if statement:
                    statements.append(statement)
                current = []
        rest = "\n".join(current).strip()
        if rest:
            statements.append(rest)
        return statements


class SqliteEngine(DatabaseEngine):
    """SQLite through the stdlib ``sqlite3`` module, in WAL mode.

    Durability: WAL with ``synchronous=NORMAL`` keeps every committed transaction
    across a process crash or SIGKILL; only an OS crash or power loss can lose the
    last commits. Pass ``synchronous="FULL"`` to survive those too, at a cost per
    commit. The server uses one connection (SQLite has one writer anyway); the
    command line opens its own and waits up to ``busy_timeout_s`` for the lock.
    """

    name = "sqlite"
    module_name = "sqlite3"

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL",
                 busy_timeout_s: float = 10.0) -> None:
        """
        Args:
            path: the database file (``":memory:"`` only for throwaway use).
            synchronous: the SQLite ``synchronous`` pragma, ``NORMAL`` or ``FULL``.
            busy_timeout_s: how long a connection waits for another one's write lock.
        """
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        self.path = str(path)
        self.synchronous = synchronous
        self.busy_timeout_s = busy_timeout_s

    def _connect_kwargs(self) -> dict[str, Any]:
        # isolation_level=None: the sqlite3 module opens no implicit transactions;
        # ``begin`` opens one explicitly so DDL in migrations is transactional too.
        return {"timeout": self.busy_timeout_s, "isolation_level": None, "check_same_thread": False}

    def pool_arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """See ``DatabaseEngine.pool_arguments``: one connection, opened with ``on_connect``."""
        kwargs = self._connect_kwargs()
        kwargs.update(cp_min=1, cp_max=1, cp_openfun=self.on_connect, cp_noisy=False)
        return (self.path,), kwargs

    def connect(self) -> sqlite3.Connection:
        """See ``DatabaseEngine.connect``."""
        connection = sqlite3.connect(self.path, **self._connect_kwargs())
        try:
            self.on_connect(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def on_connect(self, connection: Any) -> None:
        """Switch to WAL, set the sync level and busy timeout, enforce foreign keys."""
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={self.synchronous}")
        connection.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
        connection.execute("PRAGMA foreign_keys=ON")

    def begin(self, cursor: Any) -> None:
        """Take the write lock up front (``BEGIN IMMEDIATE``).

        A deferred transaction that reads and then writes can fail at once with
        SQLITE_BUSY when another connection wrote in between; an immediate one waits
        for the busy timeout instead.
        """
        cursor.execute("BEGIN IMMEDIATE")

    def is_unique_violation(self, error: BaseException) -> bool:
        """See ``DatabaseEngine.is_unique_violation``."""
        if not isinstance(error, sqlite3.IntegrityError):
            return False
        name = getattr(error, "sqlite_errorname", "")
        if name:
            return name in ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE")
        return "UNIQUE" in str(error).upper()

    @property
    def error_class(self) -> type[Exception]:
        """See ``DatabaseEngine.error_class``."""
        return sqlite3.Error

    def describe(self) -> str:
        """The database file's path."""
        return self.path


# A quoted SQL literal or identifier ('it''s', "col"): placeholders inside are left alone.
_QUOTED = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*")""")


@functools.lru_cache(maxsize=1024)
def _pyformat(text: str) -> str:
    parts = _QUOTED.split(text)
    out = []
    for index, part in enumerate(parts):
        part = part.replace("%", "%%")          # psycopg reads % everywhere when given parameters
        if index % 2 == 0:                      # outside quotes
            part = part.replace("?", "%s")
        out.append(part)
    return "".join(out)


#: SQLSTATEs after which the whole transaction can simply be run again.
_RETRYABLE_SQLSTATES = frozenset({
    "40001",    # serialization_failure
    "40P01",    # deadlock_detected
})

#: SQLSTATEs that end the session: the connection must be replaced.
_DISCONNECT_SQLSTATES = frozenset({
    "57P01",    # admin_shutdown (pg_terminate_backend, fast shutdown)
    "57P02",    # crash_shutdown
    "57P03",    # cannot_connect_now (starting up, shutting down)
})

#: Arbitrary, constant key of the advisory lock that serialises schema upgrades.
_SCHEMA_LOCK_KEY = 0x7469676173657079 & 0x7FFFFFFFFFFFFFFF      # "tigasepy"


class PostgresEngine(DatabaseEngine):
    """PostgreSQL through psycopg 3, one connection per adbapi pool thread.

    The engine is called ``postgres`` (schema overrides are ``NNN_name.postgres.sql``);
    the configuration names the backend ``postgresql``. Every interaction is one
    transaction at PostgreSQL's default READ COMMITTED isolation; multi-row changes
    commit or roll back together, and a serialization failure or deadlock makes
    ``Database`` run the transaction again (``is_retryable``).

    The password is passed to libpq separately from ``conninfo`` and appears in no
    message, log line or ``repr``. Without one, libpq's own sources apply
    (``PGPASSWORD``, ``~/.pgpass``) as well as password-less methods (peer, cert).
    """

    name = "postgres"
    module_name = "psycopg"

    def __init__(self, conninfo: str = "", *, password: str | None = None, pool_min: int = 1,
                 pool_max: int = 5, connect_timeout_s: int = 10,
                 application_name: str = "tigasepy", **params: Any) -> None:
        """
        Args:
            conninfo: a libpq connection string, ``key=value`` pairs or a
                ``postgresql://`` URI, without the password.
            password: the password, or None to leave it to libpq.
            pool_min: connections (and threads) the pool keeps at least.
            pool_max: connections (and threads) the pool opens at most.
            connect_timeout_s: how long opening a connection may take (libpq's
                ``connect_timeout``, at least 2).
            application_name: shown in ``pg_stat_activity``.
            params: more libpq parameters (``host``, ``port``, ``user``, ``dbname``, ...),
                overriding those in ``conninfo``.

        Raises:
            ValueError: ``conninfo`` cannot be parsed, or a pool size is invalid.
        """
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        if pool_min < 1 or pool_max < pool_min:
            raise ValueError("need 1 <= pool_min <= pool_max")
        params = {k: v for k, v in params.items() if v not in (None, "")}
        params.setdefault("connect_timeout", max(2, int(connect_timeout_s)))
        params.setdefault("application_name", application_name)
        try:
            self.conninfo = make_conninfo(conninfo, **params)
            parsed = conninfo_to_dict(self.conninfo)
        except Exception:
            # libpq's message may quote the string, and the string may hold a secret.
            raise ValueError("not a valid PostgreSQL connection string "
                             "(key=value pairs or a postgresql:// URI)") from None
        self._password = password
        self._parsed = {k: v for k, v in parsed.items() if k != "password"}
        self.pool_min = pool_min
        self.pool_max = pool_max

    def __repr__(self) -> str:
        return f"<PostgresEngine {self.describe()}>"

    def _connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"autocommit": False}
        if self._password is not None:
            kwargs["password"] = self._password
        return kwargs

    def pool_arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """See ``DatabaseEngine.pool_arguments``: ``pool_min``..``pool_max`` connections."""
        kwargs = self._connect_kwargs()
        kwargs.update(cp_min=self.pool_min, cp_max=self.pool_max, cp_reconnect=True,
                      cp_openfun=self.on_connect, cp_noisy=False)
        return (self.conninfo,), kwargs

    def connect(self) -> Any:
        """See ``DatabaseEngine.connect``."""
        import psycopg

        connection = psycopg.connect(self.conninfo, **self._connect_kwargs())
        try:
            self.on_connect(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def sql(self, text: str) -> str:
        """``?`` placeholders become ``%s``; a literal ``%`` becomes ``%%``.

        Always pass parameters (an empty tuple will do) with a statement that holds a
        ``%``: without parameters psycopg sends the text as it is.
        """
        return _pyformat(text)

    def is_unique_violation(self, error: BaseException) -> bool:
        """See ``DatabaseEngine.is_unique_violation`` (SQLSTATE 23505)."""
        return getattr(error, "sqlstate", None) == "23505"

    @property
    def error_class(self) -> type[Exception]:
        """See ``DatabaseEngine.error_class``."""
        import psycopg

        return psycopg.Error

    def is_retryable(self, error: BaseException) -> bool:
        """Serialization failures and deadlocks (SQLSTATE 40001, 40P01)."""
        return getattr(error, "sqlstate", None) in _RETRYABLE_SQLSTATES

    def is_disconnect(self, error: BaseException, connection: Any) -> bool:
        """A refused or lost connection, or a session the server ended.

        Errors of a connection that is still healthy (a bad statement, a timeout)
        are not disconnects.
        """
        import psycopg

        if not isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError)):
            return False
        if connection is None or connection.closed or getattr(connection, "broken", False):
            return True
        sqlstate = getattr(error, "sqlstate", None) or ""
        return sqlstate.startswith("08") or sqlstate in _DISCONNECT_SQLSTATES

    def lock_schema(self, cursor: Any) -> None:
        """Take a transaction-level advisory lock, so concurrent upgrades (several
        nodes starting, the command line) run one after the other."""
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))

    def describe(self) -> str:
        """``postgresql://user@host:port/dbname`` from the parameters given (no password)."""
        p = self._parsed
        user = f"{p['user']}@" if p.get("user") else ""
        host = p.get("host") or p.get("hostaddr") or ""
        port = f":{p['port']}" if p.get("port") else ""
        return f"postgresql://{user}{host}{port}/{p.get('dbname', '')}"

