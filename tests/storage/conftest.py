"""Fixtures for the storage contract tests: every store, on every backend.

A test that takes ``stores`` runs once per backend: memory, SQLite in a file under
``tmp_path``, and PostgreSQL on 127.0.0.1:5432. The stores are migrated before the
test and closed after.

PostgreSQL: once per run, ``pg_server`` creates a role with a random password and a
database of its own (``tigasepy_test_<random>``), both dropped at the end of the run.
Each test then works in a fresh schema of that database (``search_path`` in the
connection string), so every test starts from an empty, freshly migrated schema.
The tests connect as that role with its password over TCP, the way a deployment
does. To create the role and the database the fixture needs the superuser once:

1. ``TIGASEPY_TEST_PG_ADMIN_DSN`` if set (any libpq connection string);
2. else ``user=postgres`` over TCP to 127.0.0.1:5432 (works under ``trust``, or
   with ``PGPASSWORD`` / ``~/.pgpass``);
3. else, when the tests run as root (as in CI), ``psql`` as the ``postgres`` OS user
   over the local socket (Debian's default ``peer`` authentication).

The database gets an ICU (linguistic) default collation where the server has ICU,
as a production database in a real locale would.

When PostgreSQL does not answer on 127.0.0.1:5432, or none of these works, the
PostgreSQL tests report it through ``missing_service``: skipped locally, failed
under ``CI=true``.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import pytest_twisted

from tigasepy.config import Config, ServerConfig, StorageConfig

# No module-level ``from twisted.internet import reactor``: this conftest loads
# before pytest-twisted installs the reactor chosen with --reactor.

BACKENDS = ("memory", "sqlite", "postgresql")

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_MISSING = f"PostgreSQL not running on {PG_HOST}:{PG_PORT}"
ADMIN_DSN_VARIABLE = "TIGASEPY_TEST_PG_ADMIN_DSN"


# --- PostgreSQL --------------------------------------------------------------------------

def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


class _Admin:
    """Runs superuser SQL statements (autocommit) by whichever way works here."""

    def __init__(self) -> None:
        self.how = ""
        self._connection: Any = None
        self._psql: list[str] | None = None

    def open(self) -> str | None:
        """Find a way in; returns None, or why there is none."""
        import psycopg

        tried = []
        candidates = []
        if os.environ.get(ADMIN_DSN_VARIABLE):
            candidates.append((f"${ADMIN_DSN_VARIABLE}", os.environ[ADMIN_DSN_VARIABLE]))
        candidates.append(("user postgres over TCP",
                           f"host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres"))
        for how, dsn in candidates:
            try:
                self._connection = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
                self.how = how
                return None
            except psycopg.Error as e:
                tried.append(f"{how}: {' '.join(str(e).split())}")
        runuser = shutil.which("runuser") or shutil.which("su")
        if os.geteuid() == 0 and runuser and shutil.which("psql"):
            self._psql = ([runuser, "-u", "postgres", "--"] if runuser.endswith("runuser")
                          else [runuser, "postgres", "-s", "/bin/sh", "-c", "exec \"$0\" \"$@\""])
            self._psql += ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", "postgres"]
            try:
                self.execute("SELECT 1")
                self.how = "psql as the postgres OS user"
                return None
            except RuntimeError as e:
                tried.append(f"psql as postgres: {e}")
                self._psql = None
        else:
            tried.append("psql as postgres: needs root and psql")
        return "cannot create a test database as the PostgreSQL superuser (" + "; ".join(tried) + ")"

    def execute(self, statement: str) -> None:
        if self._connection is not None:
            self._connection.execute(statement)
            return
        assert self._psql is not None
        done = subprocess.run(self._psql + ["-c", statement], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL, cwd="/")
        if done.returncode != 0:
            raise RuntimeError(" ".join((done.stderr or done.stdout).split()))

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


@dataclass
class PostgresServer:
    """The run's test database on 127.0.0.1:5432 and the role that owns it."""

    admin: _Admin
    role: str
    password: str
    database: str

    _schemas = itertools.count(1)

    def conninfo(self, schema: str | None = None, port: int = PG_PORT) -> str:
        """A connection string (without the password) to the test database, in ``schema``."""
        from psycopg.conninfo import make_conninfo

        options = {"options": f"-c search_path={schema}"} if schema else {}
        return make_conninfo(host=PG_HOST, port=port, user=self.role, dbname=self.database, **options)

    def connect(self, schema: str | None = None) -> Any:
        """A plain psycopg connection as the test role (autocommit off)."""
        import psycopg

        return psycopg.connect(self.conninfo(schema), password=self.password)

    def new_schema(self) -> str:
        """Create an empty schema owned by the test role; returns its name."""
        name = f"t{os.getpid()}_{next(self._schemas)}"
        with self.connect() as connection:
            connection.execute(f"CREATE SCHEMA {name}")
        return name

    def engine(self, schema: str | None = None, **kwargs: Any) -> Any:
        """A ``PostgresEngine`` for the test database as the test role."""
        from tigasepy.storage.engines import PostgresEngine

        return PostgresEngine(self.conninfo(schema, kwargs.pop("port", PG_PORT)),
                              password=self.password, **kwargs)

    def terminate_backends(self) -> int:
        """End every session of the test role (``pg_terminate_backend``); returns how many."""
        with self.connect() as connection:
            # A role may terminate its own sessions (pg_signal_backend rights on itself).
            rows = connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE usename = current_user AND pid <> pg_backend_pid()").fetchall()
        return sum(1 for (ok,) in rows if ok)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer | str]:
    """The run's PostgreSQL test database, or a string saying why there is none.

    Use ``pg`` in tests: it turns the string into ``missing_service``.
    """
    try:
        import psycopg  # noqa: F401
    except ImportError:
        yield "psycopg is not installed (pip install 'psycopg[binary]')"
        return
    if not _port_open(PG_HOST, PG_PORT):
        yield PG_MISSING
        return
    admin = _Admin()
    problem = admin.open()
    if problem is not None:
        yield problem
        return
    token = secrets.token_hex(6)
    role = database = f"tigasepy_test_{token}"
    password = secrets.token_urlsafe(24)
    try:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}' NOSUPERUSER NOCREATEDB NOCREATEROLE")
        create = f"CREATE DATABASE {database} OWNER {role} ENCODING 'UTF8' TEMPLATE template0"
        try:
            # A linguistic default collation, as on most production servers (en_US.UTF-8
            # and the like): the schema must give code point order anyway.
            admin.execute(create + " LOCALE_PROVIDER icu ICU_LOCALE 'und'")
        except Exception:
            admin.execute(create)               # PostgreSQL < 15 or built without ICU
    except Exception as e:
        admin.close()
        yield f"cannot create a test database ({admin.how}): {' '.join(str(e).split())}"
        return
    try:
        yield PostgresServer(admin, role, password, database)
    finally:
        try:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {role}")
        finally:
            admin.close()


@pytest.fixture
def pg(pg_server: PostgresServer | str, missing_service: Callable[[str], Any]) -> PostgresServer:
    """The PostgreSQL test database; skips (locally) or fails (CI) without one."""
    if isinstance(pg_server, str):
        missing_service(pg_server)
    return pg_server


# --- configs and stores --------------------------------------------------------------------

def storage_config(tmp_path: Path, backend: str, **storage: Any) -> Config:
    """A config keeping its data under ``tmp_path/data`` with ``backend``."""
    return Config(server=ServerConfig(domains=("example.org",), data_dir=str(tmp_path / "data")),
                  storage=StorageConfig(backend=backend, **storage))


def postgres_config(tmp_path: Path, pg: PostgresServer, schema: str, **storage: Any) -> Config:
    """A ``backend = "postgresql"`` config for ``schema`` of the test database.

    The password goes through a ``password_file`` under ``tmp_path``, as in a deployment.
    """
    password_file = tmp_path / "db-password"
    password_file.write_text(pg.password + "\n")
    password_file.chmod(0o600)
    return storage_config(tmp_path, "postgresql", dsn=pg.conninfo(schema),
                          password_file=str(password_file), **storage)


@pytest.fixture
def make_config(tmp_path: Path, request: pytest.FixtureRequest):
    """A function building a storage config under ``tmp_path`` for a backend name.

    For ``postgresql`` each call gets a new, empty schema.
    """
    def make(backend: str, **storage: Any) -> Config:
        if backend == "postgresql":
            pg = request.getfixturevalue("pg")
            return postgres_config(tmp_path, pg, pg.new_schema(), **storage)
        return storage_config(tmp_path, backend, **storage)

    return make


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the storage backend under test."""
    return request.param


@pytest.fixture(params=("sqlite", "postgresql"))
def sql_backend(request: pytest.FixtureRequest) -> str:
    """The name of an SQL storage backend under test."""
    return request.param


@pytest_twisted.async_yield_fixture()
async def stores(make_config, backend: str):
    """Migrated stores of ``backend``; closed after the test."""
    from twisted.internet import reactor

    from tigasepy.storage.factory import Stores, open_stores

    opened: Stores = open_stores(make_config(backend), reactor)
    await opened.start()
    yield opened
    await opened.close()
