"""The PostgreSQL backend: engine, configuration, migrations, retries, outages, durability.

The contract tests (test_*_store.py) run on PostgreSQL through the ``backend``
parameter; this file covers what is particular to it. Tests that need the server
take the ``pg`` fixture (see conftest.py).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import psycopg
import psycopg.errors
import pytest
import pytest_twisted
import tomli_w
from twisted.internet import defer, reactor
from twisted.protocols import portforward

from tigasepy import cli
from tigasepy.config import ConfigError, StorageConfig, config_from_dict, default_config_text
from tigasepy.storage.database import Database, run_sync
from tigasepy.storage.engines import PostgresEngine
from tigasepy.storage.factory import open_stores, postgres_engine
from tigasepy.storage.interfaces import (
    IAccountStore,
    IOfflineStore,
    IRosterStore,
    RosterItem,
    ScramCredential,
    StorageUnavailable,
)
from tigasepy.storage.migrate import SchemaError, current_version_txn, latest_version, upgrade_txn
from tigasepy.storage.sql.accounts import list_accounts_txn
from tigasepy.storage.sql.offline import fetch_txn

REPO = Path(__file__).resolve().parents[2]
EXPECTED_TABLES = {"accounts", "credentials", "roster", "roster_version", "offline", "schema_version"}
CRED = ScramCredential("SHA-256", b"s" * 16, 4096, b"k" * 32, b"v" * 32)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (just now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def logged_text(events) -> str:
    from twisted.logger import formatEvent

    return "\n".join(formatEvent(e) for e in events)


def errors_logged(events) -> list[dict]:
    from twisted.logger import LogLevel

    return [e for e in events if e.get("log_level") in (LogLevel.error, LogLevel.critical)
            or "log_failure" in e]


# --- the engine, without a server -----------------------------------------------------------

def test_placeholders_become_pyformat_outside_quotes():
    engine = PostgresEngine("dbname=x")
    assert engine.sql("SELECT a FROM t WHERE b = ? AND c IN (?, ?)") == (
        "SELECT a FROM t WHERE b = %s AND c IN (%s, %s)")
    assert engine.sql("SELECT '?', \"q?\" FROM t WHERE x LIKE ? ESCAPE '\\'") == (
        "SELECT '?', \"q?\" FROM t WHERE x LIKE %s ESCAPE '\\'")
    assert engine.sql("SELECT 5 % 2, 'it''s 100%' WHERE a = ?") == (
        "SELECT 5 %% 2, 'it''s 100%%' WHERE a = %s")


def test_upsert_is_on_conflict_do_update():
    engine = PostgresEngine("dbname=x")
    assert engine.upsert("t", ("a",), ("a", "b"), update={"b": "t.b + 1"}) == (
        "INSERT INTO t (a, b) VALUES (%s, %s) ON CONFLICT (a) DO UPDATE SET b = t.b + 1")


def test_errors_are_classified_by_sqlstate():
    engine = PostgresEngine("dbname=x")
    assert engine.is_unique_violation(psycopg.errors.UniqueViolation())
    assert not engine.is_unique_violation(psycopg.errors.ForeignKeyViolation())
    assert engine.is_retryable(psycopg.errors.SerializationFailure())
    assert engine.is_retryable(psycopg.errors.DeadlockDetected())
    assert not engine.is_retryable(psycopg.errors.UniqueViolation())
    assert engine.is_disconnect(psycopg.OperationalError("refused"), None)
    assert engine.is_disconnect(psycopg.errors.AdminShutdown(), None)
    assert not engine.is_disconnect(psycopg.errors.UniqueViolation(), None)
    assert engine.error_class is psycopg.Error


def test_pool_arguments_and_description_keep_the_password_out_of_sight():
    engine = PostgresEngine("host=db.example.org port=5433 dbname=xmpp", user="tigase",
                            password="s3cret-pw", pool_min=2, pool_max=7, connect_timeout_s=4)
    args, kwargs = engine.pool_arguments()
    assert "s3cret-pw" not in args[0]
    assert kwargs["password"] == "s3cret-pw"
    assert (kwargs["cp_min"], kwargs["cp_max"], kwargs["cp_reconnect"]) == (2, 7, True)
    assert "connect_timeout=4" in args[0] and "application_name=tigasepy" in args[0]
    assert engine.describe() == "postgresql://tigase@db.example.org:5433/xmpp"
    assert "s3cret-pw" not in repr(engine) + engine.describe()


def test_bad_connection_strings_and_pool_sizes_are_refused_without_echoing_them():
    with pytest.raises(ValueError) as raised:
        PostgresEngine("password=hunter2 nonsense")
    assert "hunter2" not in str(raised.value)
    with pytest.raises(ValueError):
        PostgresEngine("dbname=x", pool_min=3, pool_max=2)


# --- configuration ---------------------------------------------------------------------------

def storage(**options):
    return config_from_dict({"server": {"domains": ["example.org"]}, "storage": options}).storage


def test_postgresql_config_with_dsn_or_parts():
    assert storage(backend="postgresql", dsn="host=db dbname=x").dsn == "host=db dbname=x"
    parts = storage(backend="postgresql", host="db", port=5433, user="u", database="x", pool_max=9)
    assert (parts.host, parts.port, parts.user, parts.database, parts.pool_max) == ("db", 5433, "u", "x", 9)


@pytest.mark.parametrize("options, where, message", [
    ({"backend": "mysql"}, "storage.backend", "must be 'sqlite', 'postgresql' or 'memory'"),
    ({"backend": "postgresql"}, "storage.database", "required"),
    ({"backend": "postgresql", "dsn": "dbname=x", "host": "db"}, "storage.host", "either dsn"),
    ({"backend": "postgresql", "dsn": "dbname=x password=pw"}, "storage.dsn", "password_file"),
    ({"backend": "postgresql", "dsn": "postgresql://u:pw@db/x"}, "storage.dsn", "password_file"),
    ({"backend": "postgresql", "dsn": "not a dsn"}, "storage.dsn", "not a valid PostgreSQL"),
    ({"backend": "postgresql", "database": "x", "port": 70000}, "storage.port", "1..65535"),
    ({"backend": "postgresql", "database": "x", "pool_min": 0}, "storage.pool_min", ">= 1"),
    ({"backend": "postgresql", "database": "x", "pool_min": 4, "pool_max": 2}, "storage.pool_max", ">= 4"),
    ({"backend": "postgresql", "database": "x", "connect_timeout_s": 1}, "storage.connect_timeout_s", ">= 2"),
    ({"backend": "sqlite", "dsn": "dbname=x"}, "storage.dsn", 'only for backend = "postgresql"'),
    ({"backend": "postgresql", "database": "x", "port": "5432"}, "storage.port", "must be an integer"),
])
def test_bad_postgresql_config_names_the_option(options, where, message):
    with pytest.raises(ConfigError) as raised:
        storage(**options)
    assert str(raised.value).startswith(where + ": ") and message in str(raised.value)
    assert "pw" not in str(raised.value).replace("password_file", "")


def test_the_default_config_text_shows_every_storage_option_with_its_default():
    section = default_config_text("example.org").split("[storage]\n")[1].split("\n[")[0]
    uncommented = "\n".join(line[2:].split("  #")[0] for line in section.splitlines()
                            if line.startswith("# ") and " = " in line)
    shown = tomllib.loads(uncommented)
    assert set(shown) == {f.name for f in dataclasses.fields(StorageConfig)}
    assert StorageConfig(**shown) == StorageConfig()
    docs = (REPO / "docs" / "configuration.md").read_text()
    for name in ("backend", "path") + StorageConfig.POSTGRESQL_OPTIONS:
        assert f"| `{name}` |" in docs


def test_password_file_is_read_relative_to_the_config_file(tmp_path):
    (tmp_path / "secret").write_text("pw with spaces \n")
    config = config_from_dict({"server": {"domains": ["example.org"]},
                               "storage": {"backend": "postgresql", "database": "x",
                                           "password_file": "secret"}},
                              source=str(tmp_path / "tigasepy.toml"))
    engine = postgres_engine(config)
    assert engine.pool_arguments()[1]["password"] == "pw with spaces "


@pytest.mark.parametrize("content, message", [(None, "cannot read"), ("\nsecond line\n", "holds no password")])
def test_unreadable_or_empty_password_file_is_a_config_error(tmp_path, content, message):
    if content is not None:
        (tmp_path / "secret").write_text(content)
    config = config_from_dict({"server": {"domains": ["example.org"]},
                               "storage": {"backend": "postgresql", "database": "x",
                                           "password_file": str(tmp_path / "secret")}})
    with pytest.raises(ConfigError) as raised:
        open_stores(config, reactor)
    assert str(raised.value).startswith("storage.password_file: ") and message in str(raised.value)


# --- migrations ------------------------------------------------------------------------------

def pg_tables(connection) -> set[str]:
    rows = connection.execute("SELECT table_name FROM information_schema.tables"
                              " WHERE table_schema = current_schema()").fetchall()
    return {name for (name,) in rows}


def test_fresh_postgresql_schema_reaches_the_latest_version_once(pg):
    schema = pg.new_schema()
    engine = pg.engine(schema)
    connection = engine.connect()
    try:
        assert run_sync(connection, engine, upgrade_txn, engine) == list(range(1, latest_version(engine) + 1))
        assert run_sync(connection, engine, current_version_txn, engine) == latest_version(engine)
        assert EXPECTED_TABLES <= pg_tables(connection)
        indexes = {name for (name,) in connection.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'offline'")}
        assert "offline_owner_id" in indexes
        assert run_sync(connection, engine, upgrade_txn, engine) == []
        connection.execute("INSERT INTO schema_version (version, name, applied) VALUES (999, 'future', 0)")
        connection.commit()
        with pytest.raises(SchemaError, match="newer"):
            run_sync(connection, engine, upgrade_txn, engine)
    finally:
        connection.close()


def test_failed_postgresql_upgrade_leaves_the_schema_empty(pg, monkeypatch):
    engine = pg.engine(pg.new_schema())
    real = engine.split_script
    monkeypatch.setattr(engine, "split_script", lambda sql: real(sql) + ["THIS IS NOT SQL"])
    connection = engine.connect()
    try:
        with pytest.raises(psycopg.errors.SyntaxError):
            run_sync(connection, engine, upgrade_txn, engine)
        assert pg_tables(connection) == set()
    finally:
        connection.close()


def test_concurrent_upgrades_wait_for_each_other(pg):
    """Two processes upgrading at once (two nodes starting): the second waits, then finds
    nothing left to do, instead of failing on tables the first is creating."""
    schema = pg.new_schema()
    first_engine, second_engine = pg.engine(schema), pg.engine(schema)
    first, second = first_engine.connect(), second_engine.connect()
    result: list = []
    try:
        cursor = first.cursor()
        first_engine.lock_schema(cursor)                # the first upgrade has begun
        waiter = threading.Thread(target=lambda: result.append(
            run_sync(second, second_engine, upgrade_txn, second_engine)))
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive(), "the second upgrade did not wait for the first"
        applied = upgrade_txn(cursor, first_engine)
        first.commit()
        waiter.join(30)
        assert applied == list(range(1, latest_version(first_engine) + 1))
        assert result == [[]]
    finally:
        first.close()
        second.close()


# --- transactions, retries ----------------------------------------------------------------------

class Boom(Exception):
    pass


def _insert_two_then_fail_txn(cursor, engine):
    cursor.execute(engine.sql("INSERT INTO accounts (jid, created) VALUES (?, ?)"), ("a@example.org", 0.0))
    cursor.execute(engine.sql("INSERT INTO accounts (jid, created) VALUES (?, ?)"), ("b@example.org", 0.0))
    raise Boom()


@pytest_twisted.ensureDeferred
async def test_multi_row_change_that_fails_is_rolled_back(make_config, sql_backend):
    stores = open_stores(make_config(sql_backend), reactor)
    await stores.start()
    try:
        with pytest.raises(Boom):
            await stores.database.run_interaction("fail", _insert_two_then_fail_txn, stores.database.engine)
        assert await stores.get(IAccountStore).list_accounts() == []
    finally:
        await stores.close()


@pytest_twisted.async_yield_fixture()
async def pg_db(pg):
    """A migrated ``Database`` on a fresh schema of the test database, with its schema name."""
    schema = pg.new_schema()
    engine = pg.engine(schema, pool_min=1, pool_max=1)
    db = Database(engine, reactor)
    await db.run_interaction("upgrade", upgrade_txn, engine)
    yield db, schema
    db.close()


def _bump_under_concurrent_update_txn(cursor, engine, attempts, pg, schema):
    attempts.append(len(attempts) + 1)
    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    cursor.execute(engine.sql("SELECT version FROM roster_version WHERE owner = ?"), ("a",))
    (version,) = cursor.fetchone()
    if len(attempts) == 1:                 # someone else changes the row after our snapshot
        with pg.connect(schema) as other:
            other.execute("UPDATE roster_version SET version = version + 100 WHERE owner = 'a'")
    cursor.execute(engine.sql("UPDATE roster_version SET version = ? WHERE owner = ?"), (version + 1, "a"))
    return version + 1


@pytest_twisted.ensureDeferred
async def test_serialization_failure_runs_the_transaction_again(pg, pg_db, log_events):
    db, schema = pg_db
    with pg.connect(schema) as connection:
        connection.execute("INSERT INTO roster_version (owner, version) VALUES ('a', 1)")
    attempts: list[int] = []
    result = await db.run_interaction("bump", _bump_under_concurrent_update_txn, db.engine, attempts, pg, schema)
    assert attempts == [1, 2]
    assert result == 102                   # the second run saw the other transaction's change
    assert "attempt 1 failed" in logged_text(log_events)


def _always_conflicting_txn(cursor, engine, attempts):
    attempts.append(1)
    raise psycopg.errors.SerializationFailure("could not serialize access")


@pytest_twisted.ensureDeferred
async def test_retries_are_bounded(pg_db):
    db, _schema = pg_db
    attempts: list[int] = []
    with pytest.raises(psycopg.errors.SerializationFailure):
        await db.run_interaction("conflict", _always_conflicting_txn, db.engine, attempts)
    assert len(attempts) == db.max_attempts == 3


@pytest_twisted.ensureDeferred
async def test_unique_violation_is_account_exists_and_the_connection_stays_usable(make_config):
    stores = open_stores(make_config("postgresql", pool_min=1, pool_max=1), reactor)
    await stores.start()
    try:
        engine = stores.database.engine

        def insert_twice_txn(cursor, engine):
            for _ in range(2):
                cursor.execute(engine.sql("INSERT INTO accounts (jid, created) VALUES (?, ?)"), ("a@x", 0.0))

        with pytest.raises(psycopg.Error) as raised:
            await stores.database.run_interaction("dup", insert_twice_txn, engine)
        assert engine.is_unique_violation(raised.value)
        assert await stores.get(IAccountStore).list_accounts() == []
    finally:
        await stores.close()


# --- outages and recovery --------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_terminated_sessions_are_replaced_transparently(make_config, pg, log_events):
    stores = open_stores(make_config("postgresql", pool_min=1, pool_max=1), reactor)
    await stores.start()
    try:
        accounts, offline = stores.get(IAccountStore), stores.get(IOfflineStore)
        await accounts.create("alice@example.org", [CRED])
        assert pg.terminate_backends() >= 1            # e.g. a PostgreSQL restart or failover
        assert await accounts.get_credential("alice@example.org", "SHA-256") == CRED
        assert pg.terminate_backends() >= 1
        message_id = await offline.append("alice@example.org", "<message/>", 1.0)
        assert [m.id for m in await offline.fetch("alice@example.org")] == [message_id]
        assert stores.database.available
        assert errors_logged(log_events) == []
        assert "lost the connection" in logged_text(log_events)
    finally:
        await stores.close()


class _Switchable:
    """A TCP forwarder in front of PostgreSQL that can be switched off (all connections
    cut, port closed) and on again, to act out an outage of the database server."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port_number = 0
        self._listening = None
        self._servers: list[portforward.ProxyServer] = []

    async def on(self) -> None:
        switch = self

        class Factory(portforward.ProxyFactory):
            def buildProtocol(self, addr):
                server = super().buildProtocol(addr)
                switch._servers.append(server)
                return server

        self._listening = reactor.listenTCP(self.port_number, Factory("127.0.0.1", self.target_port),
                                            interface="127.0.0.1")
        self.port_number = self._listening.getHost().port

    async def off(self) -> None:
        await defer.maybeDeferred(self._listening.stopListening)
        for server in self._servers:
            if server.transport is not None:
                server.transport.abortConnection()
            if server.peer is not None and server.peer.transport is not None:
                server.peer.transport.abortConnection()
        self._servers.clear()
        await deferLater(0.05)


def deferLater(seconds: float):
    from twisted.internet.task import deferLater as later

    return later(reactor, seconds, lambda: None)


@pytest.fixture
def switch():
    return _Switchable(5432)


@pytest_twisted.ensureDeferred
async def test_database_outage_and_recovery(tmp_path, pg, switch, log_events):
    """The server goes away: requests fail at once with StorageUnavailable, one error line
    is logged (no traceback), and the first request after it is back succeeds."""
    from tigasepy.config import Config, ServerConfig

    await switch.on()
    password_file = tmp_path / "pw"
    password_file.write_text(pg.password)
    config = Config(server=ServerConfig(domains=("example.org",), data_dir=str(tmp_path / "data")),
                    storage=StorageConfig(backend="postgresql",
                                          dsn=pg.conninfo(pg.new_schema(), port=switch.port_number),
                                          password_file=str(password_file), pool_min=1, pool_max=2))
    stores = open_stores(config, reactor)
    await stores.start()
    try:
        roster = stores.get(IRosterStore)
        await roster.put_item("alice@example.org", RosterItem(contact="bob@example.org"))

        await switch.off()
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(StorageUnavailable) as raised:
                await roster.get_items("alice@example.org")
            assert time.monotonic() - started < 5
        message = str(raised.value)
        assert message.startswith(f"cannot connect to postgresql://{pg.role}@127.0.0.1:{switch.port_number}/")
        assert "\n" not in message
        assert not stores.database.available
        errors = errors_logged(log_events)
        assert len(errors) == 1 and "log_failure" not in errors[0]
        assert "database unavailable" in logged_text(errors)

        await switch.on()
        assert [i.contact for i in await roster.get_items("alice@example.org")] == ["bob@example.org"]
        await roster.put_item("alice@example.org", RosterItem(contact="carol@example.org"))
        assert stores.database.available
        assert "available again" in logged_text(log_events)
        assert len(errors_logged(log_events)) == 1
        assert pg.password not in logged_text(log_events)
    finally:
        await stores.close()
        if switch._listening is not None and switch._listening.connected:
            await switch.off()


@pytest_twisted.ensureDeferred
async def test_store_pointed_at_a_closed_port_fails_with_a_clear_error(tmp_path, pg, log_events):
    from tigasepy.config import Config, ServerConfig

    port = free_port()
    password_file = tmp_path / "pw"
    password_file.write_text(pg.password)
    config = Config(server=ServerConfig(domains=("example.org",), data_dir=str(tmp_path / "data")),
                    storage=StorageConfig(backend="postgresql", host="127.0.0.1", port=port, user=pg.role,
                                          database=pg.database, password_file=str(password_file)))
    stores = open_stores(config, reactor)
    try:
        with pytest.raises(StorageUnavailable) as raised:
            await stores.start()
        assert f"127.0.0.1:{port}" in str(raised.value) and "refused" in str(raised.value)
        with pytest.raises(StorageUnavailable):
            await stores.get(IAccountStore).exists("alice@example.org")
        assert len(errors_logged(log_events)) == 1
        assert pg.password not in logged_text(log_events) + str(raised.value)
    finally:
        await stores.close()


# --- durability -------------------------------------------------------------------------------

_APPEND_THEN_HANG = """
import os, sys
from twisted.internet import reactor
from tigasepy.storage.database import Database
from tigasepy.storage.engines import PostgresEngine
from tigasepy.storage.migrate import upgrade_txn
from tigasepy.storage.sql.offline import SqlOfflineStore

engine = PostgresEngine(sys.argv[1], password=os.environ["TEST_PG_PASSWORD"])
db = Database(engine, reactor)

async def go():
    await db.run_interaction("upgrade", upgrade_txn, engine)
    message_id = await SqlOfflineStore(db).append("alice@example.org", "<message/>", 1.0)
    print(message_id, flush=True)          # acknowledged: now it must survive a kill

from twisted.internet.defer import Deferred
reactor.callWhenRunning(lambda: Deferred.fromCoroutine(go()))
reactor.run()
"""


def test_acknowledged_append_survives_sigkill_on_postgresql(pg):
    """Once ``append`` has fired, the message is committed even if the process is killed."""
    schema = pg.new_schema()
    env = dict(os.environ, PYTHONPATH=str(REPO), TEST_PG_PASSWORD=pg.password)
    proc = subprocess.Popen([sys.executable, "-c", _APPEND_THEN_HANG, pg.conninfo(schema)], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    message_id = int(line)
    engine = pg.engine(schema)
    connection = engine.connect()
    try:
        assert [m.id for m in run_sync(connection, engine, fetch_txn, engine, "alice@example.org")] == [message_id]
    finally:
        connection.close()


# --- the command line ---------------------------------------------------------------------------

def write_config(tmp_path: Path, storage: dict) -> Path:
    path = tmp_path / "tigasepy.toml"
    path.write_text(tomli_w.dumps({"server": {"domains": ["example.org"], "data_dir": "data"},
                                   "storage": storage}))
    return path


def test_cli_upgrades_and_manages_accounts_on_postgresql(tmp_path, pg, capsys):
    (tmp_path / "db-password").write_text(pg.password + "\n")
    schema = pg.new_schema()
    config = write_config(tmp_path, {"backend": "postgresql", "dsn": pg.conninfo(schema),
                                     "password_file": "db-password"})
    where = f"postgresql://{pg.role}@127.0.0.1:5432/{pg.database}"
    assert cli.main(["--config", str(config), "db", "upgrade"]) == 0
    assert capsys.readouterr().out == f"database {where} upgraded to schema version {latest_version(PostgresEngine())}\n"
    assert cli.main(["--config", str(config), "db", "upgrade"]) == 0
    assert "up to date at schema version" in capsys.readouterr().out
    assert cli.main(["--config", str(config), "user", "add", "alice@example.org", "--password", "pw"]) == 0
    assert cli.main(["--config", str(config), "user", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "alice@example.org"
    engine = pg.engine(schema)
    connection = engine.connect()
    try:
        assert run_sync(connection, engine, list_accounts_txn, engine) == ["alice@example.org"]
    finally:
        connection.close()


def test_cli_init_prepares_a_postgresql_database(tmp_path, pg, capsys):
    (tmp_path / "db-password").write_text(pg.password)
    config = write_config(tmp_path, {"backend": "postgresql", "dsn": pg.conninfo(pg.new_schema()),
                                     "password_file": "db-password"})
    assert cli.main(["--config", str(config), "init"]) == 0
    assert "upgraded to schema version" in capsys.readouterr().out


def test_cli_with_the_database_down_is_one_error_line(tmp_path, pg, capsys):
    (tmp_path / "db-password").write_text(pg.password)
    config = write_config(tmp_path, {"backend": "postgresql", "host": "127.0.0.1", "port": free_port(),
                                     "user": pg.role, "database": pg.database, "password_file": "db-password"})
    assert cli.main(["--config", str(config), "user", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tigasepy: error: cannot open database postgresql://") and err.count("\n") == 1
    assert "refused" in err and pg.password not in err


def test_cli_with_a_missing_password_file_is_one_error_line(tmp_path, capsys):
    config = write_config(tmp_path, {"backend": "postgresql", "database": "x", "password_file": "nope"})
    assert cli.main(["--config", str(config), "db", "upgrade"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tigasepy: error: storage.password_file: cannot read ") and err.count("\n") == 1


@pytest_twisted.ensureDeferred
async def test_login_against_a_down_database_is_a_temporary_auth_failure(tmp_path, pg):
    """What a client sees: SASL over a store whose database is down fails with
    ``temporary-auth-failure`` (not ``not-authorized``)."""
    from tigasepy.auth.plain import PlainServerExchange
    from tigasepy.auth.scram import ScramServerExchange
    from tigasepy.config import Config, ServerConfig
    from tigasepy.interfaces import SaslContext, SaslFailure

    password_file = tmp_path / "pw"
    password_file.write_text(pg.password)
    config = Config(server=ServerConfig(domains=("example.org",), data_dir=str(tmp_path / "data")),
                    storage=StorageConfig(backend="postgresql", host="127.0.0.1", port=free_port(),
                                          user=pg.role, database=pg.database,
                                          password_file=str(password_file)))
    stores = open_stores(config, reactor)
    try:
        lookup = stores.get(IAccountStore).get_credential
        context = SaslContext(domain="example.org", secure=True)
        exchanges = [
            (ScramServerExchange("SCRAM-SHA-256", context, lookup, secret=b"k" * 32, plus_offered=False),
             b"n,,n=alice,r=abcdef"),
            (PlainServerExchange(context, lookup, ("SHA-256",), secret=b"k" * 32), b"\0alice\0secret"),
        ]
        for exchange, first in exchanges:
            with pytest.raises(SaslFailure) as raised:
                await exchange.step(first)
            assert raised.value.condition == "temporary-auth-failure"
    finally:
        await stores.close()
