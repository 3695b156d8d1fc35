"""The adbapi Database layer and the store factory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from zope.interface import Interface

from tigasepy.storage.database import Database, run_sync
from tigasepy.storage.engines import SqliteEngine
from tigasepy.storage.factory import open_stores
from tigasepy.storage.interfaces import IAccountStore, IOfflineStore, IRosterStore, ScramCredential
from tigasepy.storage.memory import MemoryAccountStore
from tigasepy.storage.migrate import latest_version, upgrade_txn
from tigasepy.storage.sql import SqlAccountStore, SqlOfflineStore, SqlRosterStore
from tigasepy.storage.sql.accounts import list_accounts_txn
from tigasepy.storage.sql.offline import fetch_txn


class Boom(Exception):
    pass


def _insert_then_fail_txn(cursor, engine, jid):
    cursor.execute(engine.sql("INSERT INTO accounts (jid, created) VALUES (?, ?)"), (jid, 0.0))
    raise Boom()


@pytest_twisted.ensureDeferred
async def test_interaction_that_raises_is_rolled_back(tmp_path):
    engine = SqliteEngine(tmp_path / "db.sqlite")
    db = Database(engine, reactor)
    try:
        await db.run_interaction("upgrade", upgrade_txn, engine)
        with pytest.raises(Boom):
            await db.run_interaction("fail", _insert_then_fail_txn, engine, "a@example.org")
        store = SqlAccountStore(db, clock=reactor)
        assert await store.exists("a@example.org") is False
    finally:
        db.close()


@pytest_twisted.ensureDeferred
async def test_committed_data_survives_reopening(tmp_path, make_config):
    config = make_config("sqlite")
    first = open_stores(config, reactor)
    await first.start()
    cred = ScramCredential("SHA-256", b"s" * 16, 4096, b"k" * 32, b"v" * 32)
    await first.get(IAccountStore).create("alice@example.org", [cred])
    msg_id = await first.get(IOfflineStore).append("alice@example.org", "<message/>", 5.0)
    await first.close()

    second = open_stores(config, reactor)
    assert await second.start() == []
    try:
        assert await second.get(IAccountStore).get_credential("alice@example.org", "SHA-256") == cred
        assert [m.id for m in await second.get(IOfflineStore).fetch("alice@example.org")] == [msg_id]
    finally:
        await second.close()


@pytest_twisted.ensureDeferred
async def test_a_second_synchronous_connection_sees_server_writes(tmp_path, make_config):
    config = make_config("sqlite")
    stores = open_stores(config, reactor)
    await stores.start()
    try:
        await stores.get(IAccountStore).create("alice@example.org", [])
        engine = stores.database.engine
        other = engine.connect()
        assert run_sync(other, engine, list_accounts_txn, engine) == ["alice@example.org"]
        other.close()
    finally:
        await stores.close()


@pytest_twisted.ensureDeferred
async def test_sqlite_factory_creates_the_data_dir_and_migrates(tmp_path, make_config):
    config = make_config("sqlite")
    stores = open_stores(config, reactor)
    try:
        assert (tmp_path / "data").is_dir()
        assert await stores.start() == list(range(1, latest_version(stores.database.engine) + 1))
        assert (tmp_path / "data" / "tigasepy.sqlite").is_file()
        assert isinstance(stores.get(IAccountStore), SqlAccountStore)
        assert isinstance(stores.get(IRosterStore), SqlRosterStore)
        assert isinstance(stores.get(IOfflineStore), SqlOfflineStore)
    finally:
        await stores.close()


@pytest_twisted.ensureDeferred
async def test_memory_factory_gives_memory_stores(tmp_path, make_config):
    stores = open_stores(make_config("memory"), reactor)
    assert await stores.start() == []
    assert isinstance(stores.get(IAccountStore), MemoryAccountStore)
    assert stores.database is None
    await stores.close()


def test_unknown_interface_is_a_key_error(tmp_path, make_config):
    class INothing(Interface):
        pass

    stores = open_stores(make_config("memory"), reactor)
    with pytest.raises(KeyError):
        stores.get(INothing)


def test_upsert_statement_shape():
    engine = SqliteEngine(":memory:")
    assert engine.upsert("t", ("a",), ("a", "b", "c")) == (
        "INSERT INTO t (a, b, c) VALUES (?, ?, ?) ON CONFLICT (a) DO UPDATE SET b = excluded.b, c = excluded.c")
    assert engine.upsert("t", ("a",), ("a",)).endswith("ON CONFLICT (a) DO NOTHING")


_APPEND_THEN_HANG = """
import sys
from twisted.internet import reactor
from tigasepy.storage.database import Database
from tigasepy.storage.engines import SqliteEngine
from tigasepy.storage.migrate import upgrade_txn
from tigasepy.storage.sql.offline import SqlOfflineStore

engine = SqliteEngine(sys.argv[1])
db = Database(engine, reactor)

async def go():
    await db.run_interaction("upgrade", upgrade_txn, engine)
    message_id = await SqlOfflineStore(db).append("alice@example.org", "<message/>", 1.0)
    print(message_id, flush=True)          # acknowledged: now it must survive a kill

from twisted.internet.defer import Deferred
reactor.callWhenRunning(lambda: Deferred.fromCoroutine(go()))
reactor.run()
"""


def test_acknowledged_append_survives_sigkill(tmp_path):
    """Once ``append`` has fired, the message is on disk even if the process is killed."""
    path = tmp_path / "db.sqlite"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, "-c", _APPEND_THEN_HANG, str(path)], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    message_id = int(line)
    engine = SqliteEngine(path)
    connection = engine.connect()
    assert [m.id for m in run_sync(connection, engine, fetch_txn, engine, "alice@example.org")] == [message_id]
    connection.close()
