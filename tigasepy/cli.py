"""The ``tigasepy`` admin command line: set up a server and manage its accounts.

::

    tigasepy [--config PATH] init [--domain DOMAIN]
    tigasepy [--config PATH] user add JID [--password P]
    tigasepy [--config PATH] user passwd JID [--password P]
    tigasepy [--config PATH] user del JID
    tigasepy [--config PATH] user list [DOMAIN]
    tigasepy [--config PATH] db upgrade
    tigasepy [--config PATH] export [--domain D]... FILE_OR_DIR
    tigasepy [--config PATH] import [--domain D]... [--skip-existing | --replace] FILE...
    tigasepy [--config PATH] host add|del DOMAIN
    tigasepy [--config PATH] host list

These spellings are stable: scripts depend on them. The commands work while the
server runs: they open the database ([storage] backend: SQLite in WAL mode, or
PostgreSQL) on their own synchronous connection, wait for locks (SQLite's busy
timeout, PostgreSQL's row and schema locks), and run the same ``*_txn``
functions the server's stores use. No reactor is involved.

To add a subcommand, write a ``Command`` (name, help, ``configure(parser)``,
``run(args) -> exit status``) and add it to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TextIO

from tigasepy.admin.commands import delete_account_and_data_txn
from tigasepy.auth.accounts import (
    DomainNotHosted,
    InvalidAccountJID,
    InvalidPassword,
    make_credentials,
    prepare_account_jid,
)
from tigasepy.config import Config, ConfigError, default_config_text, default_domain, load_config
from tigasepy.storage.database import run_sync
from tigasepy.storage.engines import DatabaseEngine
from tigasepy.storage.factory import database_engine
from tigasepy.storage.interfaces import AccountExists, NoSuchAccount
from tigasepy.storage.migrate import SchemaError, current_version_txn, upgrade_txn
from tigasepy.storage.sql import accounts as sql_accounts

PROG = "tigasepy"
DEFAULT_CONFIG = "tigasepy.toml"


class CliError(Exception):
    """A failure to report as one ``tigasepy: error: ...`` line (exit status 1)."""


@dataclass(frozen=True)
class Command:
    """One top-level subcommand of ``tigasepy``.

    Attributes:
        name: the word on the command line (``init``, ``user``, ``loadtest``).
        help: one line for ``tigasepy --help``.
        configure: adds the command's arguments (and sub-subcommands) to its parser.
        run: runs it with the parsed arguments; returns the exit status. Raise
            ``CliError`` for an error the user should see as one line. A command with
            sub-subcommands may instead set ``run`` on each via ``set_defaults(run=...)``.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int] | None = None


# --- helpers ------------------------------------------------------------------------------

def _out(text: str) -> None:
    print(text, file=sys.stdout)


def _load(args: argparse.Namespace) -> Config:
    try:
        return load_config(args.config)
    except ConfigError as e:
        raise CliError(str(e)) from None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _engine(config: Config) -> DatabaseEngine:
    if config.storage.backend == "memory":
        raise CliError(f"storage backend {config.storage.backend!r} keeps no accounts; "
                       "set [storage] backend = \"sqlite\" or \"postgresql\"")
    try:
        return database_engine(config)
    except ConfigError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"cannot prepare the database: {e}") from None


@dataclass
class _Database:
    """An open, up-to-date database: ``run(fn, *args)`` runs ``fn(cursor, engine, *args)``."""

    connection: Any
    engine: DatabaseEngine
    path: str                 # where the database is (a file, a postgresql:// address)
    applied: list[int]

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run one ``*_txn`` function in its own transaction."""
        return run_sync(self.connection, self.engine, fn, self.engine, *args)


@contextmanager
def _database(config: Config) -> Iterator[_Database]:
    """The database of ``config``, migrated (creates an SQLite data directory)."""
    engine = _engine(config)
    where = engine.describe()
    try:
        connection = engine.connect()
    except (OSError, engine.error_class) as e:
        raise CliError(f"cannot open database {where}: {_one_line(e)}") from None
    try:
        applied = run_sync(connection, engine, upgrade_txn, engine)
        yield _Database(connection, engine, where, applied)
    except SchemaError as e:
        raise CliError(str(e)) from None
    except engine.error_class as e:
        raise CliError(f"database {where}: {_one_line(e)}") from None
    finally:
        connection.close()


def _account_jid(config: Config, text: str) -> str:
    try:
        return prepare_account_jid(text, config.server.domains)
    except (InvalidAccountJID, DomainNotHosted) as e:
        raise CliError(str(e)) from None


def _read_password(given: str | None, stdin: TextIO) -> str:
    """The password: from the option, else prompted twice on a terminal, else one stdin line."""
    if given is not None:
        return given
    if stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != first:
            raise CliError("passwords do not match")
        return first
    line = stdin.readline()
    if not line:
        raise CliError("no password given (use --password, a terminal, or one line on stdin)")
    return line.rstrip("\r\n")


def _credentials(config: Config, password: str) -> list[Any]:
    try:
        return make_credentials(password, config.auth.scram_hashes, config.auth.scram_iterations)
    except InvalidPassword as e:
        raise CliError(str(e)) from None


# --- init ---------------------------------------------------------------------------------

def _configure_init(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--domain", help="the XMPP domain for a new config (default: this host's name)")


def _run_init(args: argparse.Namespace) -> int:
    path = Path(args.config)
    if path.exists():
        _out(f"config {path} exists; left as is")
    else:
        domain = args.domain or default_domain()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x", encoding="utf-8") as f:
                f.write(default_config_text(domain))
        except OSError as e:
            raise CliError(f"cannot write {path}: {e}") from None
        _out(f"wrote config {path} for domain {domain}")
    config = _load(args)
    try:
        config.data_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create data directory {config.data_path}: {e}") from None
    _out(f"data directory {config.data_path} ready")
    if not config.has_role("sm"):
        _out("a connection-manager process (roles without sm): no database; copy the session "
             "manager's link secret here (docs/deployment.md)")
        return 0
    if config.storage.backend == "memory":
        _out(f"storage backend is {config.storage.backend}: no database to prepare")
        return 0
    _upgrade(config)
    return 0


def _upgrade(config: Config) -> None:
    with _database(config) as db:
        version = db.run(current_version_txn)
    state = "upgraded to" if db.applied else "up to date at"
    _out(f"database {db.path} {state} schema version {version}")


# --- db -----------------------------------------------------------------------------------

def _configure_db(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="db_action", metavar="ACTION", required=True)
    upgrade = actions.add_parser("upgrade", help="apply missing schema migrations")
    upgrade.set_defaults(run=_run_db_upgrade)


def _run_db_upgrade(args: argparse.Namespace) -> int:
    _upgrade(_load(args))
    return 0


# --- user ---------------------------------------------------------------------------------

def _configure_user(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="user_action", metavar="ACTION", required=True)
    password_help = ("the password (visible to other local users: prefer the prompt, "
                     "or one line on standard input)")

    add = actions.add_parser("add", help="create an account")
    add.add_argument("jid", metavar="JID", help="the bare JID, e.g. alice@example.org")
    add.add_argument("--password", help=password_help)
    add.set_defaults(run=_run_user_add)

    passwd = actions.add_parser("passwd", help="change an account's password")
    passwd.add_argument("jid", metavar="JID")
    passwd.add_argument("--password", help=password_help)
    passwd.set_defaults(run=_run_user_passwd)

    delete = actions.add_parser("del", help="delete an account with all its data (roster, offline messages, "
                                            "vCard, private storage, ...)")
    delete.add_argument("jid", metavar="JID")
    delete.set_defaults(run=_run_user_del)

    listing = actions.add_parser("list", help="list accounts, one bare JID per line")
    listing.add_argument("domain", metavar="DOMAIN", nargs="?", help="only accounts of this domain")
    listing.set_defaults(run=_run_user_list)


def _run_user_add(args: argparse.Namespace) -> int:
    config = _load(args)
    jid = _account_jid(config, args.jid)
    with _database(config) as db:
        if db.run(sql_accounts.account_exists_txn, jid):
            raise CliError(f"user {jid} exists")
        credentials = _credentials(config, _read_password(args.password, sys.stdin))
        try:
            db.run(sql_accounts.create_account_txn, jid, credentials, time.time())
        except AccountExists:
            raise CliError(f"user {jid} exists") from None
    _out(f"added user {jid}")
    return 0


def _run_user_passwd(args: argparse.Namespace) -> int:
    config = _load(args)
    jid = _account_jid(config, args.jid)
    with _database(config) as db:
        if not db.run(sql_accounts.account_exists_txn, jid):
            raise CliError(f"no user {jid}")
        credentials = _credentials(config, _read_password(args.password, sys.stdin))
        try:
            db.run(sql_accounts.set_credentials_txn, jid, credentials)
        except NoSuchAccount:
            raise CliError(f"no user {jid}") from None
    _out(f"changed password of user {jid}")
    return 0


def _run_user_del(args: argparse.Namespace) -> int:
    config = _load(args)
    jid = _account_jid(config, args.jid)
    with _database(config) as db:
        try:
            db.run(delete_account_and_data_txn, jid)
        except NoSuchAccount:
            raise CliError(f"no user {jid}") from None
    _out(f"deleted user {jid}")
    return 0


def _run_user_list(args: argparse.Namespace) -> int:
    config = _load(args)
    domain = args.domain
    if domain is not None:
        domain = domain.strip().lower()
        if domain not in config.server.domains:
            raise CliError(f"domain {domain} is not hosted here (server.domains)")
    with _database(config) as db:
        jids = db.run(sql_accounts.list_accounts_txn, domain)
    for jid in jids:
        _out(jid)
    return 0


# --- export / import (XEP-0227) ------------------------------------------------------------

def _hosted(config: Config, given: list[str] | None) -> list[str]:
    """The ``--domain`` values (prepared), each hosted here; all hosted domains when none."""
    if not given:
        return list(config.server.domains)
    domains = []
    for text in given:
        domain = text.strip().lower()
        if domain not in config.server.domains:
            raise CliError(f"domain {domain} is not hosted here (server.domains)")
        if domain not in domains:
            domains.append(domain)
    return domains


def _configure_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--domain", action="append", metavar="DOMAIN",
                        help="export only this hosted domain (repeatable; default: every one)")
    parser.add_argument("path", metavar="FILE_OR_DIR",
                        help="the file to write; a folder (existing, or a path ending in /) gets "
                             "server-data.xml, HOST.xml and HOST/USER.xml (XEP-0227 section 5.1)")


def _run_export(args: argparse.Namespace) -> int:
    from tigasepy.admin.portability import ExportWriter, PortabilityError, read_user_txn

    config = _load(args)
    domains = _hosted(config, args.domain)
    path = Path(args.path)
    directory = args.path.endswith(("/", os.sep)) or path.is_dir()
    with _database(config) as db:
        try:
            writer = ExportWriter(path, directory)
        except PortabilityError as e:
            raise CliError(str(e)) from None
        try:
            for domain in domains:
                writer.begin_host(domain)
                for jid in db.run(sql_accounts.list_accounts_txn, domain):
                    writer.write_user(db.run(read_user_txn, jid))
                writer.end_host()
            writer.close()
        except BaseException as e:
            if not directory:
                writer.abandon()
            if isinstance(e, PortabilityError):
                raise CliError(str(e)) from None
            raise
    _out(f"exported {writer.users} account(s) of {len(domains)} host(s) to {writer.main_path}")
    return 0


def _configure_import(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="XEP-0227 files with <server-data/> at the root (XIncludes are followed)")
    parser.add_argument("--domain", action="append", metavar="DOMAIN",
                        help="import only this domain's <host/> (repeatable; default: every host)")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--skip-existing", action="store_true",
                          help="leave accounts that exist here as they are (default: refuse to start)")
    existing.add_argument("--replace", action="store_true",
                          help="delete an existing account with all its data, then import it")


def _run_import(args: argparse.Namespace) -> int:
    from tigasepy.admin import portability as pie

    config = _load(args)
    only = _hosted(config, args.domain) if args.domain else None
    try:
        pep_max_items = config.extensions.get("pep", {}).get("max_items", pie.PEP_MAX_ITEMS)
        report = pie.load_import(args.files, domains=only, pep_max_items=pep_max_items)
    except pie.PortabilityError as e:
        raise CliError(str(e)) from None
    foreign = [host for host in report.hosts if host not in config.server.domains]
    if foreign:
        raise CliError(f"the import holds host(s) not hosted here: {', '.join(foreign)} "
                       "(add them to server.domains, or pick hosts with --domain); nothing was imported")
    if not report.users:
        _out("no accounts in the import")
        return 0
    converted = sum(1 for user in report.users if user.password is not None)
    try:
        for user in report.users:
            pie.derive_credentials(user, config.auth.scram_hashes, config.auth.scram_iterations)
    except pie.PortabilityError as e:
        raise CliError(f"{e}; nothing was imported") from None
    mode = pie.SKIP if args.skip_existing else pie.REPLACE if args.replace else pie.REFUSE
    outcomes: dict[str, int] = {"imported": 0, "replaced": 0, "skipped": 0}
    with _database(config) as db:
        if mode == pie.REFUSE:
            taken = [u.jid for u in report.users if db.run(sql_accounts.account_exists_txn, u.jid)]
            if taken:
                raise CliError(f"{len(taken)} account(s) exist here already ({', '.join(taken[:3])}"
                               f"{', ...' if len(taken) > 3 else ''}): pass --skip-existing or --replace; "
                               "nothing was imported")
        now = time.time()
        for user in report.users:
            try:
                outcome = db.run(pie.import_user_txn, user, mode, now)
            except AccountExists:
                raise CliError(f"user {user.jid} exists (created meanwhile); {outcomes['imported']} "
                               "account(s) imported before it: run again with --skip-existing") from None
            except Exception as e:
                raise CliError(f"user {user.jid}: {_one_line(e)}; its data was not imported, "
                               f"{sum(outcomes.values())} account(s) before it were: run again with "
                               "--skip-existing to go on") from None
            outcomes[outcome] += 1
    for note in report.notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    for what, count in sorted(report.ignored.items()):
        print(f"{PROG}: note: ignored {what} ({count}x): tigasepy does not keep it", file=sys.stderr)
    no_login = [u.jid for u in report.users if not u.credentials and "internal" in config.auth.chain_of(u.host)
                and "ldap" not in config.auth.chain_of(u.host)]
    if no_login:
        print(f"{PROG}: note: {len(no_login)} account(s) came without usable credentials "
              f"({', '.join(no_login[:3])}{', ...' if len(no_login) > 3 else ''}): set a password with "
              f"'{PROG} user passwd'", file=sys.stderr)
    _out(f"imported {outcomes['imported'] + outcomes['replaced']} account(s) of {len(report.hosts)} host(s) "
         f"({outcomes['imported']} new, {outcomes['replaced']} replaced, {outcomes['skipped']} skipped); "
         f"{converted} plaintext password(s) turned into SCRAM keys")
    return 0


# --- host (virtual hosts) ------------------------------------------------------------------

_RELOAD_HINT = ("a running server applies it on reload (SIGHUP to its process, or the ad-hoc command "
                "'Reload Configuration'), without touching other hosts' sessions")


def _configure_host(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="host_action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add a hosted domain to [server] domains in the config file")
    add.add_argument("domain", metavar="DOMAIN")
    add.set_defaults(run=_run_host_add)
    delete = actions.add_parser("del", help="remove a hosted domain from the config file (its accounts "
                                            "stay in the database)")
    delete.add_argument("domain", metavar="DOMAIN")
    delete.set_defaults(run=_run_host_del)
    listing = actions.add_parser("list", help="list the hosted domains, one per line")
    listing.set_defaults(run=_run_host_list)


def _edit_domains(args: argparse.Namespace, change: Callable[[list[str], str], list[str]]) -> Config:
    from tigasepy.admin.config_file import ConfigEditError, set_domains

    config = _load(args)
    domain = args.domain.strip().lower().rstrip(".")
    domains = change(list(config.server.domains), domain)
    try:
        return set_domains(Path(args.config), domains)
    except ConfigEditError as e:
        raise CliError(str(e)) from None


def _run_host_add(args: argparse.Namespace) -> int:
    def add(domains: list[str], domain: str) -> list[str]:
        from tigasepy.xmpp.jid import InvalidFormat, parse_jid

        try:
            parsed = parse_jid(domain)
        except InvalidFormat:
            parsed = None
        if parsed is None or parsed.user or parsed.resource or parsed.host != domain or " " in domain:
            raise CliError(f"{domain!r} is not a domain name")
        if domain in domains:
            raise CliError(f"{domain} is hosted already")
        return domains + [domain]

    config = _edit_domains(args, add)
    _out(f"added host {config.server.domains[-1]} to {args.config}; {_RELOAD_HINT}")
    return 0


def _run_host_del(args: argparse.Namespace) -> int:
    def remove(domains: list[str], domain: str) -> list[str]:
        if domain not in domains:
            raise CliError(f"{domain} is not hosted here (server.domains)")
        if len(domains) == 1:
            raise CliError(f"{domain} is the only hosted domain; a server needs one")
        return [d for d in domains if d != domain]

    before = _load(args).server.domains
    _edit_domains(args, remove)
    domain = args.domain.strip().lower().rstrip(".")
    note = "; the first domain changes at the next restart" if before[0] == domain else ""
    _out(f"removed host {domain} from {args.config} (its accounts stay in the database); {_RELOAD_HINT}{note}")
    return 0


def _run_host_list(args: argparse.Namespace) -> int:
    for domain in _load(args).server.domains:
        _out(domain)
    return 0


# --- the registry and main ------------------------------------------------------------------

#: Every top-level subcommand, in help order. Add new ones here.
COMMANDS: tuple[Command, ...] = (
    Command("init", "write a default config (if missing), create the data directory, prepare the database",
            _configure_init, _run_init),
    Command("user", "manage accounts: add, passwd, del, list", _configure_user),
    Command("db", "database maintenance: upgrade", _configure_db),
    Command("export", "write accounts and their data to a XEP-0227 file or folder", _configure_export,
            _run_export),
    Command("import", "read accounts and their data from XEP-0227 files (ejabberd, Prosody, tigasepy)",
            _configure_import, _run_import),
    Command("host", "virtual hosts in the config file: add, del, list", _configure_host),
    Command("loadtest", "generate XMPP load against a server on this machine (see docs/loadtest.md)",
            lambda parser: _loadtest_cli().configure(parser), lambda args: _loadtest_cli().run(args)),
)


def _loadtest_cli() -> Any:
    # Imported only when used: the load tool is not needed to administer a server.
    from tigasepy.loadtest import cli as loadtest_cli

    return loadtest_cli


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    """The argument parser for ``commands``."""
    parser = argparse.ArgumentParser(prog=PROG, description="tigasepy XMPP server administration")
    parser.add_argument("--config", default=DEFAULT_CONFIG, metavar="PATH",
                        help=f"the config file (default: {DEFAULT_CONFIG} in the current directory)")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands:
        sub = subcommands.add_parser(command.name, help=command.help, description=command.help)
        command.configure(sub)
        if command.run is not None:
            sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None, commands: Sequence[Command] = COMMANDS) -> int:
    """Run the ``tigasepy`` command line; returns the exit status.

    Args:
        argv: the arguments after the program name (``sys.argv[1:]`` if None).
        commands: the subcommands to offer.
    """
    parser = build_parser(commands)
    try:
        args = parser.parse_args(argv)
        return int(args.run(args) or 0)
    except CliError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except SystemExit as e:       # argparse: --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
