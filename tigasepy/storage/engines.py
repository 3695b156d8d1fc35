"""Database engines: what differs between SQLite and PostgreSQL, in one place.

Stores write their SQL once, with ``?`` placeholders and the upsert built by
``DatabaseEngine.upsert``; the engine turns that into what its DB-API driver
expects. Adding PostgreSQL (psycopg 3) means adding one ``DatabaseEngine``
subclass here and, where a schema delta needs other DDL, a
``NNN_name.postgres.sql`` file beside the portable one (see ``migrate``).
"""

from __future__ import annotations

import abc
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

