"""Migration from ejabberd (XEP-0227): the migrated users log in over real sockets and see their data.

- ``test_migrated_users_log_in_and_see_their_roster`` imports the export Debian's ejabberd
  23.01 wrote (``tests/fixtures/xep0227/ejabberd-23.01``) and always runs.
- ``test_live_ejabberd_export_imports_and_matches_the_fixture`` runs a private ejabberd
  (``support.ejabberd``), creates the same data there, exports it with
  ``ejabberdctl export_piefxis``, checks that it matches the fixture and imports it. It
  skips where ejabberd is not installed, in CI too (.ci/run does not install it: the
  fixture test is the required one). ``TIGASEPY_REGENERATE_FIXTURES=1`` replaces the
  fixture with the fresh export.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import threads

from support import ejabberd
from support.server import RunningServer
from support.xmpp_clients import ClientPool, TestClient, asyncio_test, fetch_roster, from_deferred, is_chat, \
    is_presence
from tigasepy.admin import portability as pie
from tigasepy.storage.database import run_sync
from tigasepy.storage.factory import database_engine

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "xep0227" / "ejabberd-23.01"

pytestmark = pytest.mark.parametrize("server_overrides", [{"server": {"domains": ["plain.test", "scram.test"]}}])


def main_file(folder: Path) -> Path:
    """The main file of an ``export_piefxis`` folder (the host files have ``_host`` in their name)."""
    [main] = [p for p in folder.glob("*.xml") if "_" not in p.name]
    return main


def import_into(server: RunningServer, folder: Path) -> pie.ImportReport:
    """What ``tigasepy import`` does, on the running server's database (own connection)."""
    config = server.config
    report = pie.load_import([main_file(folder)])
    engine = database_engine(config)
    connection = engine.connect()
    try:
        for user in report.users:
            pie.derive_credentials(user, config.auth.scram_hashes, config.auth.scram_iterations)
            run_sync(connection, engine, pie.import_user_txn, engine, user, pie.REFUSE, 0.0)
    finally:
        connection.close()
    return report


def client(clients: ClientPool, jid: str, mechanism: str | None = None) -> TestClient:
    made = TestClient(jid, ejabberd.PASSWORDS[jid], cafile=clients.server.certificate_path, mechanism=mechanism)
    clients.clients.append(made)
    return made


async def check_migrated_users(server: RunningServer, clients: ClientPool, folder: Path) -> None:
    await from_deferred(threads.deferToThread(import_into, server, folder), timeout=30)

    # A plaintext password in the export: SCRAM keys for every configured hash.
    juliet = client(clients, "juliet@plain.test")
    await juliet.login(server.c2s_port)
    roster = await fetch_roster(juliet)
    assert roster == {
        "romeo@plain.test": {"subscription": "both", "ask": None, "name": "Romeo"},
        "nurse@scram.test": {"subscription": "to", "ask": None, "name": "The Nurse"},
    }
    juliet.send_presence()
    assert await juliet.messages.wait_for(is_chat("Neither, fair saint, if either thee dislike."))
    assert await juliet.messages.wait_for(is_chat("Your mother calls"))

    # ejabberd's own SCRAM-SHA-1 keys (scram.test), used as they are.
    nurse = client(clients, "nurse@scram.test", mechanism="SCRAM-SHA-1")
    await nurse.login(server.c2s_port)
    assert (await fetch_roster(nurse))["juliet@plain.test"]["subscription"] == "from"
    nurse.send_presence()
    # The subscription request romeo left pending is delivered at initial presence (RFC 6121 3.1.3).
    assert await nurse.presences.wait_for(is_presence("subscribe", "romeo@plain.test"))


@asyncio_test
async def test_migrated_users_log_in_and_see_their_roster(xmpp_server: RunningServer, clients: ClientPool) -> None:
    await check_migrated_users(xmpp_server, clients, FIXTURE)


def _comparable(folder: Path) -> list[dict[str, Any]]:
    """An export's data without what differs between two runs (salts, times, ids)."""
    out = []
    for user in pie.load_import([main_file(folder)], now=0.0).users:
        out.append({
            "jid": user.jid, "password": user.password is not None,
            "credentials": [(c.hash_name, c.iterations) for c in user.credentials],
            "roster": sorted(user.roster, key=lambda i: i.contact), "vcard": user.vcard, "private": user.private, "privacy": user.privacy,
            "offline": [xml.split("<body>")[1] for _stamp, xml in user.offline],
        })
    return sorted(out, key=lambda user: user["jid"])      # ejabberd lists a host's users in no fixed order


@asyncio_test(timeout=240)
async def test_live_ejabberd_export_imports_and_matches_the_fixture(xmpp_server: RunningServer,
                                                                    clients: ClientPool,
                                                                    tmp_path: Path) -> None:
    reason = ejabberd.unavailable_reason()
    if reason:
        pytest.skip(f"{reason}; the fixture test covers the import (.ci/run does not install ejabberd)")
    node = ejabberd.PrivateEjabberd()

    def produce() -> Path:
        try:
            node.start()
            node.populate()
            exported = tmp_path / "ejabberd-export"
            shutil.copytree(node.export(), exported)
            return exported
        finally:
            node.stop()

    exported = await from_deferred(threads.deferToThread(produce), timeout=200)
    assert _comparable(exported) == _comparable(FIXTURE)
    if os.environ.get("TIGASEPY_REGENERATE_FIXTURES") == "1":
        shutil.rmtree(FIXTURE)
        shutil.copytree(exported, FIXTURE)
    await check_migrated_users(xmpp_server, clients, exported)
