"""The ``tigasepy`` admin command line, called as ``main([...])`` and once as a real process."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from tigasepy import cli
from tigasepy.auth.scram import salted_password, stored_key
from tigasepy.config import load_config
from tigasepy.storage.database import run_sync
from tigasepy.storage.engines import SqliteEngine
from tigasepy.storage.factory import open_stores
from tigasepy.storage.interfaces import IAccountStore, LastActivity, RosterItem, VCard
from tigasepy.storage.migrate import current_version_txn, latest_version
from tigasepy.storage.sql import accounts as sql_accounts
from tigasepy.storage.sql import last_activity as sql_last_activity
from tigasepy.storage.sql import offline as sql_offline
from tigasepy.storage.sql import private as sql_private
from tigasepy.storage.sql import roster as sql_roster
from tigasepy.storage.sql import vcard as sql_vcard

REPO = Path(__file__).resolve().parents[2]


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def config_path(tmp_path, capsys) -> Path:
    """A config for example.org (and example.net) after ``tigasepy init``."""
    path = tmp_path / "tigasepy.toml"
    assert cli.main(["--config", str(path), "init", "--domain", "example.org"]) == 0
    text = path.read_text().replace('domains = ["example.org"]', 'domains = ["example.org", "example.net"]')
    path.write_text(text)
    capsys.readouterr()
    return path


@pytest.fixture
def run(config_path, capsys):
    """Run ``tigasepy --config <config_path> ARGS``; returns (status, stdout, stderr)."""
    def run(*args: str, stdin: str | None = None):
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        try:
            status = cli.main(["--config", str(config_path), *args])
        finally:
            sys.stdin = sys.__stdin__
        out, err = capsys.readouterr()
        return status, out, err
    return run


def db(config_path: Path):
    config = load_config(config_path)
    engine = SqliteEngine(config.data_path / config.storage.path)
    return engine.connect(), engine


def password_ok(config_path: Path, jid: str, password: str) -> bool:
    connection, engine = db(config_path)
    try:
        creds = [run_sync(connection, engine, sql_accounts.get_credential_txn, engine, jid, h)
                 for h in ("SHA-1", "SHA-256")]
    finally:
        connection.close()
    if None in creds:
        return False
    return all(stored_key(c.hash_name, salted_password(c.hash_name, password, c.salt, c.iterations))
               == c.stored_key for c in creds)


# --- init ---------------------------------------------------------------------------------

def test_init_writes_config_creates_data_dir_and_migrates(tmp_path, capsys):
    path = tmp_path / "tigasepy.toml"
    assert cli.main(["--config", str(path), "init", "--domain", "example.org"]) == 0
    out = capsys.readouterr().out
    assert f"wrote config {path} for domain example.org" in out
    config = load_config(path)
    assert config.server.domains == ("example.org",)
    assert config.data_path.is_dir()
    assert "schema version" in out
    connection, engine = db(path)
    assert run_sync(connection, engine, current_version_txn, engine) == latest_version(engine)


def test_init_defaults_to_this_hosts_name_and_keeps_an_existing_config(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "default_domain", lambda: "host.example")
    path = tmp_path / "tigasepy.toml"
    assert cli.main(["--config", str(path), "init"]) == 0
    assert load_config(path).server.domains == ("host.example",)
    before = path.read_text()
    capsys.readouterr()
    assert cli.main(["--config", str(path), "init", "--domain", "other.example"]) == 0
    assert "exists; left as is" in capsys.readouterr().out
    assert path.read_text() == before


def test_config_defaults_to_tigasepy_toml_in_the_current_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init", "--domain", "example.org"]) == 0
    assert (tmp_path / "tigasepy.toml").is_file() and (tmp_path / "data" / "tigasepy.sqlite").is_file()
    assert cli.main(["user", "add", "a@example.org", "--password", "pw"]) == 0


def test_init_with_memory_backend_prepares_no_database(tmp_path, capsys):
    path = tmp_path / "tigasepy.toml"
    path.write_text('[server]\ndomains = ["example.org"]\n[storage]\nbackend = "memory"\n')
    assert cli.main(["--config", str(path), "init"]) == 0
    assert "no database to prepare" in capsys.readouterr().out


# --- user ---------------------------------------------------------------------------------

def test_user_add_with_password_option(run, config_path):
    assert run("user", "add", "Alice@Example.org", "--password", "s3cret") == (0, "added user alice@example.org\n", "")
    assert password_ok(config_path, "alice@example.org", "s3cret")


def test_user_add_reads_one_line_from_stdin_when_not_a_tty(run, config_path):
    assert run("user", "add", "alice@example.org", stdin="pass word\nignored\n")[0] == 0
    assert password_ok(config_path, "alice@example.org", "pass word")


def test_user_add_prompts_twice_on_a_tty(run, config_path, monkeypatch):
    answers = iter(["typed", "typed"])
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt="": next(answers))
    monkeypatch.setattr(sys, "stdin", FakeTty())
    assert cli.main(["--config", str(config_path), "user", "add", "alice@example.org"]) == 0
    assert password_ok(config_path, "alice@example.org", "typed")


def test_user_add_refuses_mismatched_prompts(config_path, monkeypatch, capsys):
    answers = iter(["one", "two"])
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt="": next(answers))
    monkeypatch.setattr(sys, "stdin", FakeTty())
    assert cli.main(["--config", str(config_path), "user", "add", "alice@example.org"]) == 1
    assert capsys.readouterr().err == "tigasepy: error: passwords do not match\n"


def test_user_add_twice_is_one_error_line(run):
    run("user", "add", "alice@example.org", "--password", "x")
    assert run("user", "add", "alice@example.org", "--password", "y") == (
        1, "", "tigasepy: error: user alice@example.org exists\n")


@pytest.mark.parametrize("jid, message", [
    ("alice@elsewhere.org", "domain elsewhere.org is not hosted here"),
    ("alice@example.org/phone", "has a resource"),
    ("example.org", "not an account JID"),
])
def test_user_add_refuses_bad_jids(run, jid, message):
    status, out, err = run("user", "add", jid, "--password", "x")
    assert status == 1 and err.startswith("tigasepy: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("stdin", ["", "\n"])
def test_user_add_refuses_missing_or_empty_password(run, stdin):
    status, _, err = run("user", "add", "alice@example.org", stdin=stdin)
    assert status == 1 and err.startswith("tigasepy: error: ")


def test_user_passwd_changes_the_password(run, config_path):
    run("user", "add", "alice@example.org", "--password", "old")
    assert run("user", "passwd", "alice@example.org", stdin="new\n") == (
        0, "changed password of user alice@example.org\n", "")
    assert password_ok(config_path, "alice@example.org", "new")
    assert not password_ok(config_path, "alice@example.org", "old")


def test_user_passwd_of_unknown_user_fails(run):
    assert run("user", "passwd", "bob@example.org", "--password", "x") == (
        1, "", "tigasepy: error: no user bob@example.org\n")


def test_user_del_removes_account_roster_and_offline_messages(run, config_path):
    run("user", "add", "alice@example.org", "--password", "x")
    connection, engine = db(config_path)
    run_sync(connection, engine, sql_roster.put_item_txn, engine, "alice@example.org",
             RosterItem(contact="bob@example.org"))
    run_sync(connection, engine, sql_offline.append_txn, engine, "alice@example.org", "<message/>", 1.0)
    assert run("user", "del", "alice@example.org") == (0, "deleted user alice@example.org\n", "")
    assert run_sync(connection, engine, sql_accounts.account_exists_txn, engine, "alice@example.org") is False
    assert run_sync(connection, engine, sql_roster.get_items_txn, engine, "alice@example.org") == []
    assert run_sync(connection, engine, sql_offline.count_txn, engine, "alice@example.org") == 0
    assert run("user", "del", "alice@example.org") == (1, "", "tigasepy: error: no user alice@example.org\n")


def test_user_del_removes_vcard_private_storage_and_last_activity(run, config_path):
    run("user", "add", "alice@example.org", "--password", "x")
    run("user", "add", "bob@example.org", "--password", "x")
    connection, engine = db(config_path)
    for jid in ("alice@example.org", "bob@example.org"):
        run_sync(connection, engine, sql_vcard.set_vcard_txn, engine, jid, VCard("<vCard xmlns='vcard-temp'/>"))
        run_sync(connection, engine, sql_private.set_private_txn, engine, jid, {"urn:a": "<a xmlns='urn:a'/>"})
        run_sync(connection, engine, sql_last_activity.set_last_txn, engine, jid, LastActivity(1.0, "bye"))
    assert run("user", "del", "alice@example.org")[0] == 0
    assert run_sync(connection, engine, sql_vcard.get_vcard_txn, engine, "alice@example.org") is None
    assert run_sync(connection, engine, sql_private.namespaces_txn, engine, "alice@example.org") == []
    assert run_sync(connection, engine, sql_last_activity.get_last_txn, engine, "alice@example.org") is None
    assert run_sync(connection, engine, sql_vcard.get_vcard_txn, engine, "bob@example.org") is not None
    assert run_sync(connection, engine, sql_private.namespaces_txn, engine, "bob@example.org") == ["urn:a"]


def test_user_list_all_and_by_domain(run):
    for jid in ("zed@example.org", "alice@example.org", "bob@example.net"):
        run("user", "add", jid, "--password", "x")
    assert run("user", "list") == (0, "alice@example.org\nbob@example.net\nzed@example.org\n", "")
    assert run("user", "list", "example.org") == (0, "alice@example.org\nzed@example.org\n", "")
    assert run("user", "list", "nowhere.org")[0] == 1


def test_missing_config_is_one_error_line(tmp_path, capsys):
    assert cli.main(["--config", str(tmp_path / "none.toml"), "user", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tigasepy: error: no config file at ") and err.count("\n") == 1


def test_memory_backend_has_no_accounts_to_manage(tmp_path, capsys):
    path = tmp_path / "tigasepy.toml"
    path.write_text('[server]\ndomains = ["example.org"]\n[storage]\nbackend = "memory"\n')
    assert cli.main(["--config", str(path), "user", "add", "a@example.org", "--password", "x"]) == 1
    assert "keeps no accounts" in capsys.readouterr().err


def test_usage_errors_exit_with_2(run):
    assert run("user")[0] == 2
    assert run("frobnicate")[0] == 2
    assert run("--help")[0] == 0


def test_db_upgrade_reports_the_version(run):
    status, out, _ = run("db", "upgrade")
    assert status == 0 and "up to date at schema version" in out


def test_another_subcommand_can_be_registered(capsys):
    def configure(parser):
        parser.add_argument("--count", type=int, default=1)

    def hello(args):
        print("hello " * args.count)
        return 3

    commands = cli.COMMANDS + (cli.Command("hello", "say hello", configure, hello),)
    assert cli.main(["hello", "--count", "2"], commands=commands) == 3
    assert capsys.readouterr().out.startswith("hello hello")


# --- with the server running ------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_cli_works_while_the_server_has_the_database_open(config_path, capsys):
    stores = open_stores(load_config(config_path), reactor)
    await stores.start()
    try:
        accounts = stores.get(IAccountStore)
        await accounts.create("server-made@example.org", [])
        assert cli.main(["--config", str(config_path), "user", "add", "cli-made@example.org",
                         "--password", "pw"]) == 0
        assert await accounts.exists("cli-made@example.org")
        assert cli.main(["--config", str(config_path), "user", "list"]) == 0
        assert capsys.readouterr().out.splitlines()[-2:] == ["cli-made@example.org", "server-made@example.org"]
        assert cli.main(["--config", str(config_path), "user", "del", "cli-made@example.org"]) == 0
        assert not await accounts.exists("cli-made@example.org")
    finally:
        await stores.close()


def test_runs_as_a_real_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def tigasepy(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tigasepy.cli", *args], cwd=tmp_path, env=env,
                              input=stdin, capture_output=True, text=True, timeout=60)

    assert tigasepy("init", "--domain", "example.org").returncode == 0
    assert tigasepy("user", "add", "alice@example.org", stdin="secret\n").returncode == 0
    listed = tigasepy("user", "list")
    assert (listed.returncode, listed.stdout) == (0, "alice@example.org\n")
    again = tigasepy("user", "add", "alice@example.org", "--password", "x")
    assert (again.returncode, again.stderr) == (1, "tigasepy: error: user alice@example.org exists\n")


def test_loadtest_is_mounted_on_the_admin_command(capsys):
    from tigasepy.cli import main

    assert main(["loadtest", "--help"]) == 0
    assert "login" in capsys.readouterr().out
    assert main(["loadtest", "chat", "--host", "192.0.2.1", "--pairs", "1"]) == 2
    assert "loopback" in capsys.readouterr().err
