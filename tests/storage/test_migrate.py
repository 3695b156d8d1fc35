"""Schema migrations: numbered deltas, applied once, in order, in one transaction."""

from __future__ import annotations

import sqlite3

import pytest

from tigasepy.storage.database import run_sync
from tigasepy.storage.engines import SqliteEngine
from tigasepy.storage.migrate import SchemaError, current_version_txn, deltas, latest_version, upgrade_txn

EXPECTED_TABLES = {"accounts", "credentials", "roster", "roster_version", "offline", "schema_version"}


@pytest.fixture
def engine(tmp_path):
    return SqliteEngine(tmp_path / "db.sqlite")


def tables(connection: sqlite3.Connection) -> set[str]:
    rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows if not name.startswith("sqlite_")}


def test_deltas_are_numbered_from_one_without_gaps(engine):
    found = deltas(engine)
    assert [d.version for d in found] == list(range(1, len(found) + 1))
    assert found[0].name == "initial"
    assert latest_version(engine) == found[-1].version


def test_fresh_database_reaches_the_latest_version(engine):
    connection = engine.connect()
    applied = run_sync(connection, engine, upgrade_txn, engine)
    assert applied == list(range(1, latest_version(engine) + 1))
    assert run_sync(connection, engine, current_version_txn, engine) == latest_version(engine)
    assert EXPECTED_TABLES <= tables(connection)
    indexes = {name for (name,) in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'offline'")}
    assert "offline_owner_id" in indexes


def test_upgrading_twice_is_a_no_op(engine):
    connection = engine.connect()
    run_sync(connection, engine, upgrade_txn, engine)
    assert run_sync(connection, engine, upgrade_txn, engine) == []
    second = engine.connect()                      # another process, e.g. the CLI
    assert run_sync(second, engine, upgrade_txn, engine) == []


def test_database_newer_than_the_code_is_refused(engine):
    connection = engine.connect()
    run_sync(connection, engine, upgrade_txn, engine)
    connection.execute("INSERT INTO schema_version (version, name, applied) VALUES (999, 'future', 0)")
    with pytest.raises(SchemaError, match="newer"):
        run_sync(connection, engine, upgrade_txn, engine)


def test_failed_upgrade_leaves_the_database_unchanged(engine, monkeypatch):
    real = engine.split_script
    monkeypatch.setattr(engine, "split_script", lambda sql: real(sql) + ["THIS IS NOT SQL"])
    connection = engine.connect()
    with pytest.raises(sqlite3.OperationalError):
        run_sync(connection, engine, upgrade_txn, engine)
    assert tables(connection) == set()


def test_database_is_in_wal_mode(engine):
    connection = engine.connect()
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_split_script_skips_comments_and_splits_at_line_ending_semicolons(engine):
    script = "-- a comment; with a semicolon\nCREATE TABLE a (x INTEGER); \n\nCREATE TABLE b (\n y TEXT -- c\n);\n"
    assert engine.split_script(script) == ["CREATE TABLE a (x INTEGER)", "CREATE TABLE b (\n y TEXT -- c\n)"]
