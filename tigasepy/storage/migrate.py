"""Schema migrations: numbered SQL deltas in ``storage/schema/``, applied in order at start.

A delta is ``NNN_name.sql`` (portable) with an optional ``NNN_name.<engine>.sql``
that replaces it for one engine (``sqlite``, ``postgres``). The ``schema_version``
table records every applied version; ``upgrade_txn`` applies the missing ones in
one transaction, so a failed upgrade leaves the database as it was (DDL is
transactional on both SQLite and PostgreSQL). Concurrent upgrades of one database
(several nodes starting, the command line) wait for each other
(``DatabaseEngine.lock_schema``). Deltas are append-only: never edit one that has
shipped, add the next number.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from tigasepy.storage.engines import DatabaseEngine

_DELTA_NAME = re.compile(r"^(?P<version>\d{3})_(?P<name>[a-z0-9_]+)(?:\.(?P<engine>[a-z0-9]+))?\.sql$")


class SchemaError(Exception):
    """The database schema cannot be brought to the version this code needs."""


@dataclass(frozen=True)
class Delta:
    """One schema step: its version number, name and SQL text for an engine."""

    version: int
    name: str
    sql: str


def deltas(engine: DatabaseEngine) -> list[Delta]:
    """Every schema delta for ``engine``, in version order."""
    chosen: dict[int, tuple[bool, str, str]] = {}
    for entry in (resources.files("tigasepy.storage") / "schema").iterdir():
        match = _DELTA_NAME.match(entry.name)
        if match is None:
            continue
        specific = match["engine"]
        if specific is not None and specific != engine.name:
            continue
        version = int(match["version"])
        previous = chosen.get(version)
        if previous is not None:
            if previous[0] == (specific is not None):
                raise SchemaError(f"two schema deltas numbered {version:03d}")
            if previous[0]:
                continue            # the engine-specific file wins
        chosen[version] = (specific is not None, match["name"], entry.read_text(encoding="utf-8"))
    found = [Delta(v, name, sql) for v, (_specific, name, sql) in sorted(chosen.items())]
    expected = list(range(1, len(found) + 1))
    if [d.version for d in found] != expected:
        raise SchemaError("schema delta numbers must run 001, 002, ... without gaps")
    return found


def latest_version(engine: DatabaseEngine) -> int:
    """The schema version this code brings a database to."""
    found = deltas(engine)
    return found[-1].version if found else 0


def current_version_txn(cursor: Any, engine: DatabaseEngine) -> int:
    """The database's schema version, 0 for an empty database."""
    cursor.execute(engine.sql(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied DOUBLE PRECISION NOT NULL)"))
    cursor.execute(engine.sql("SELECT MAX(version) FROM schema_version"))
    (version,) = cursor.fetchone()
    return int(version or 0)


def upgrade_txn(cursor: Any, engine: DatabaseEngine) -> list[int]:
    """Apply the missing schema deltas in order.

    Returns:
        The versions applied (empty when the database was up to date).

    Raises:
        SchemaError: the database is newer than this code.
    """
    engine.lock_schema(cursor)
    current = current_version_txn(cursor, engine)
    available = deltas(engine)
    latest = available[-1].version if available else 0
    if current > latest:
        raise SchemaError(f"database schema version {current} is newer than this tigasepy "
                          f"supports ({latest}); upgrade tigasepy")
    applied = []
    for delta in available:
        if delta.version <= current:
            continue
        for statement in engine.split_script(delta.sql):
            cursor.execute(statement)
        cursor.execute(engine.sql("INSERT INTO schema_version (version, name, applied) VALUES (?, ?, ?)"),
                       (delta.version, delta.name, time.time()))
        applied.append(delta.version)
    return applied
