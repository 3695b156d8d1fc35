"""Open the stores a configuration asks for: ``open_stores(config, reactor)``.

Code asks the result for a store by interface (``stores.get(IRosterStore)``),
never by backend class.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from twisted.internet import defer
from zope.interface.interface import InterfaceClass

from tigasepy.config import Config, ConfigError
from tigasepy.log_level import Logger
from tigasepy.storage.database import Database
from tigasepy.storage.engines import DatabaseEngine, PostgresEngine, SqliteEngine
from tigasepy.storage.interfaces import (
    IAccountStore, IArchiveStore, ILastActivityStore, IOfflineStore, IPrivateStore, IRosterStore, IVCardStore,
)
from tigasepy.storage.memory import (
    MemoryAccountStore, MemoryArchiveStore, MemoryLastActivityStore, MemoryOfflineStore, MemoryPrivateStore,
    MemoryRosterStore, MemoryVCardStore,
)
from tigasepy.storage.interfaces import IPrivacyStore
from tigasepy.storage.memory import MemoryPrivacyStore
from tigasepy.storage.interfaces import IPepStore
from tigasepy.storage.memory import MemoryPepStore
from tigasepy.storage.sql.pep import SqlPepStore
from tigasepy.storage.muc import IMucRoomStore, MemoryMucRoomStore
from tigasepy.storage.sql.muc import SqlMucRoomStore
from tigasepy.storage.migrate import upgrade_txn
from tigasepy.storage.sql.accounts import SqlAccountStore
from tigasepy.storage.sql.archive import SqlArchiveStore
from tigasepy.storage.sql.last_activity import SqlLastActivityStore
from tigasepy.storage.sql.offline import SqlOfflineStore
from tigasepy.storage.sql.privacy import SqlPrivacyStore
from tigasepy.storage.sql.private import SqlPrivateStore
from tigasepy.storage.sql.roster import SqlRosterStore
from tigasepy.storage.sql.vcard import SqlVCardStore

#: interface -> how to build its SQL store from (database, reactor). Add new areas here.
SQL_STORES: Mapping[InterfaceClass, Callable[[Database, Any], Any]] = MappingProxyType({
    IAccountStore: lambda db, reactor: SqlAccountStore(db, clock=reactor),
    IRosterStore: lambda db, reactor: SqlRosterStore(db),
    IOfflineStore: lambda db, reactor: SqlOfflineStore(db),
    IArchiveStore: lambda db, reactor: SqlArchiveStore(db),
    IPrivacyStore: lambda db, reactor: SqlPrivacyStore(db),
    IVCardStore: lambda db, reactor: SqlVCardStore(db),
    IPrivateStore: lambda db, reactor: SqlPrivateStore(db),
    ILastActivityStore: lambda db, reactor: SqlLastActivityStore(db),
    IPepStore: lambda db, reactor: SqlPepStore(db),
    IMucRoomStore: lambda db, reactor: SqlMucRoomStore(db),
})

#: interface -> its memory store class. Add new areas here.
MEMORY_STORES: Mapping[InterfaceClass, Callable[[], Any]] = MappingProxyType({
    IAccountStore: MemoryAccountStore,
    IRosterStore: MemoryRosterStore,
    IOfflineStore: MemoryOfflineStore,
    IArchiveStore: MemoryArchiveStore,
    IPrivacyStore: MemoryPrivacyStore,
    IVCardStore: MemoryVCardStore,
    IPrivateStore: MemoryPrivateStore,
    ILastActivityStore: MemoryLastActivityStore,
    IPepStore: MemoryPepStore,
    IMucRoomStore: MemoryMucRoomStore,
})


class Stores:
    """The open stores of one server, looked up by interface."""

    _log = Logger()

    def __init__(self, stores: Mapping[InterfaceClass, Any], database: Database | None = None) -> None:
        """
        Args:
            stores: one store per storage interface.
            database: the database behind them (None for memory stores).
        """
        self._stores = dict(stores)
        self.database = database

    def get(self, interface: InterfaceClass) -> Any:
        """The store providing ``interface``.

        Raises:
            KeyError: no store for that interface.
        """
        return self._stores[interface]

    def start(self) -> "defer.Deferred[list[int]]":
        """Bring the schema up to date; fires with the schema versions applied."""
        if self.database is None:
            return defer.succeed([])
        d = self.database.run_interaction("upgrade_schema", upgrade_txn, self.database.engine)

        def report(applied: list[int]) -> list[int]:
            if applied:
                self._log.info("database schema upgraded to version {version}", version=applied[-1])
            return applied

        return d.addCallback(report)

    def close(self) -> "defer.Deferred[None]":
        """Close the database (if any); the stores must not be used afterwards."""
        if self.database is not None:
            return self.database.close()
        return defer.succeed(None)


def open_stores(config: Config, reactor: Any) -> Stores:
    """Build the stores ``config.storage`` names (not yet migrated: call ``start``).

    ``sqlite`` keeps a file at ``config.data_path / config.storage.path`` (the
    data directory is created); ``postgresql`` connects as ``database_engine``
    says; ``memory`` keeps nothing across restarts.

    Raises:
        ConfigError: the password file cannot be read.
    """
    if config.storage.backend == "memory":
        return Stores({iface: make() for iface, make in MEMORY_STORES.items()})
    database = Database(database_engine(config), reactor)
    return Stores({iface: make(database, reactor) for iface, make in SQL_STORES.items()}, database)


def database_engine(config: Config) -> DatabaseEngine:
    """The engine of ``config``'s SQL backend (for the server and the command line).

    Opens no connection. For SQLite the data directory is created; for PostgreSQL
    the password file is read.

    Raises:
        ValueError: the backend keeps no database (``memory``) or is unknown.
        ConfigError: the password file cannot be read.
    """
    backend = config.storage.backend
    if backend == "sqlite":
        return SqliteEngine(sqlite_path(config))
    if backend == "postgresql":
        return postgres_engine(config)
    raise ValueError(f"storage backend {backend!r} has no database")


def postgres_engine(config: Config) -> PostgresEngine:
    """The ``PostgresEngine`` for ``config.storage`` (backend ``postgresql``)."""
    storage = config.storage
    password = None
    if storage.password_file:
        password = read_password_file(config_relative(config, storage.password_file))
    try:
        return PostgresEngine(storage.dsn, password=password, pool_min=storage.pool_min,
                              pool_max=storage.pool_max, connect_timeout_s=storage.connect_timeout_s,
                              host=storage.host, port=storage.port or None, user=storage.user,
                              dbname=storage.database)
    except ValueError as e:
        raise ConfigError(str(e), ("storage", "dsn")) from None


def config_relative(config: Config, name: str) -> Path:
    """``name`` as a path; a relative one is relative to the config file's folder."""
    path = Path(name)
    if not path.is_absolute() and config.source:
        path = Path(config.source).parent / path
    return path


def read_password_file(path: Path) -> str:
    """The password in the first line of ``path`` (without the line end).

    Raises:
        ConfigError: the file cannot be read or its first line is empty.
    """
    where = ("storage", "password_file")
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}", where) from None
    password = line.rstrip("\r\n")
    if not password:
        raise ConfigError(f"{path} holds no password (its first line is empty)", where)
    return password


def sqlite_path(config: Config, create_dir: bool = True) -> str:
    """The SQLite file ``config`` names; creates the data directory (owner-only) when asked."""
    data = config.data_path
    if create_dir:
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
    return str(data / config.storage.path)
