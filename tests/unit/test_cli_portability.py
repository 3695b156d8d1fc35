"""``tigasepy export`` / ``tigasepy import`` (XEP-0227): a real ejabberd export, modes, bad files."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import pytest

from tigasepy import cli
from tigasepy.admin import portability as pie
from tigasepy.auth.scram import salted_password, server_key, stored_key
from tigasepy.config import load_config
from tigasepy.storage.database import run_sync
from tigasepy.storage.engines import SqliteEngine
from tigasepy.storage.interfaces import RosterItem
from tigasepy.storage.sql import accounts as sql_accounts

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "xep0227"
#: Written by ``ejabberdctl export_piefxis`` of Debian's ejabberd 23.01 (tests/integration/test_migration.py
#: regenerates it): plain.test stores plaintext passwords, scram.test SCRAM-SHA-1 keys.
EJABBERD = FIXTURES / "ejabberd-23.01"
PASSWORDS = {"juliet@plain.test": "jul1et-pw", "romeo@plain.test": "r0meo pw", "nurse@scram.test": "nur$e-pw"}


def ejabberd_main_file(folder: Path = EJABBERD) -> Path:
    """The main file of an export_piefxis folder (the one with <server-data/>, named by its time)."""
    [main] = [p for p in folder.glob("*.xml") if "_" not in p.name]
    return main


@pytest.fixture
def config_path(tmp_path, capsys) -> Path:
    path = tmp_path / "tigasepy.toml"
    assert cli.main(["--config", str(path), "init", "--domain", "plain.test"]) == 0
    text = path.read_text().replace('domains = ["plain.test"]', 'domains = ["plain.test", "scram.test"]')
    path.write_text(text.replace("# scram_iterations = 10000", "scram_iterations = 4096"))
    capsys.readouterr()
    return path


@pytest.fixture
def run(config_path, capsys):
    def run(*args: str):
        sys.stdin = io.StringIO("")
        try:
            status = cli.main(["--config", str(config_path), *args])
        finally:
            sys.stdin = sys.__stdin__
        out, err = capsys.readouterr()
        return status, out, err
    return run


@pytest.fixture
def db(config_path):
    config = load_config(config_path)
    engine = SqliteEngine(config.data_path / config.storage.path)
    connection = engine.connect()
    yield lambda fn, *args: run_sync(connection, engine, fn, engine, *args)
    connection.close()


def can_log_in(db, jid: str, password: str) -> list[str]:
    """The SCRAM hashes whose stored keys ``password`` matches."""
    ok = []
    for hash_name in ("SHA-1", "SHA-256"):
        c = db(sql_accounts.get_credential_txn, jid, hash_name)
        if c is None:
            continue
        salted = salted_password(hash_name, password, c.salt, c.iterations)
        if stored_key(hash_name, salted) == c.stored_key and server_key(hash_name, salted) == c.server_key:
            ok.append(hash_name)
    return ok


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if not line.startswith("tigasepy: note:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("tigasepy: error: ")
    return lines[0]


def test_import_of_a_real_ejabberd_export(run, db):
    status, out, err = run("import", str(ejabberd_main_file()))
    assert status == 0, err
    assert "imported 3 account(s) of 2 host(s) (3 new, 0 replaced, 0 skipped)" in out
    assert "2 plaintext password(s) turned into SCRAM keys" in out
    assert "base64-encoded twice" in err

    assert db(sql_accounts.list_accounts_txn) == sorted(PASSWORDS)
    # Plaintext passwords became keys for both hashes; ejabberd's SCRAM-SHA-1 keys work as they are.
    assert can_log_in(db, "juliet@plain.test", PASSWORDS["juliet@plain.test"]) == ["SHA-1", "SHA-256"]
    assert can_log_in(db, "romeo@plain.test", PASSWORDS["romeo@plain.test"]) == ["SHA-1", "SHA-256"]
    assert can_log_in(db, "nurse@scram.test", PASSWORDS["nurse@scram.test"]) == ["SHA-1"]
    assert can_log_in(db, "juliet@plain.test", "wrong") == []

    juliet = db(pie.read_user_txn, "juliet@plain.test")
    assert juliet.roster == [
        RosterItem("nurse@scram.test", "The Nurse", "to", groups=("Household",)),
        RosterItem("romeo@plain.test", "Romeo", "both", groups=("Friends", "Family")),
    ]
    assert "<FN>Juliet Capulet</FN>" in juliet.vcard.xml
    assert juliet.private == {"exodus:prefs": "<exodus xmlns='exodus:prefs'><defaultnick>Jules</defaultnick>"
                                              "</exodus>"}
    assert [stamp for stamp, _xml in juliet.offline] == pytest.approx([1795757955.166364, 1795757956.353299])
    assert "Neither, fair saint" in juliet.offline[0][1]
    assert "stanza-id" not in juliet.offline[0][1] and "mam:tmp" not in juliet.offline[0][1]
    assert list(juliet.privacy.lists) == ["public"] and juliet.privacy.default is None
    nurse = db(pie.read_user_txn, "nurse@scram.test")
    assert RosterItem("romeo@plain.test", pending_in=True, in_roster=False) in nurse.roster
    assert RosterItem("juliet@plain.test", "Juliet", "from") in nurse.roster


def test_existing_accounts_refuse_skip_or_replace(run, db):
    main = str(ejabberd_main_file())
    run("user", "add", "romeo@plain.test", "--password", "new-romeo")
    status, _out, err = run("import", main)
    assert status == 1
    assert "1 account(s) exist here already (romeo@plain.test): pass --skip-existing or --replace; " \
           "nothing was imported" in one_error_line(err)
    assert db(sql_accounts.list_accounts_txn) == ["romeo@plain.test"]

    status, out, _err = run("import", "--skip-existing", main)
    assert status == 0 and "(2 new, 0 replaced, 1 skipped)" in out
    assert can_log_in(db, "romeo@plain.test", "new-romeo")
    assert db(pie.read_user_txn, "romeo@plain.test").roster == []

    status, out, _err = run("import", "--replace", main)
    assert status == 0 and "(0 new, 3 replaced, 0 skipped)" in out
    assert can_log_in(db, "romeo@plain.test", PASSWORDS["romeo@plain.test"])
    assert [i.contact for i in db(pie.read_user_txn, "romeo@plain.test").roster] == ["juliet@plain.test"]
    assert len(db(pie.read_user_txn, "juliet@plain.test").offline) == 2      # replaced, not doubled

    status, _out, err = run("import", "--skip-existing", "--replace", main)
    assert status == 2


def test_import_of_one_domain_and_of_unhosted_hosts(run, db, config_path):
    status, out, _err = run("import", "--domain", "scram.test", str(ejabberd_main_file()))
    assert status == 0 and "imported 1 account(s) of 1 host(s)" in out
    assert db(sql_accounts.list_accounts_txn) == ["nurse@scram.test"]

    config_path.write_text(config_path.read_text().replace('"plain.test", "scram.test"', '"plain.test"'))
    status, _out, err = run("import", str(ejabberd_main_file()))
    assert status == 1
    assert "not hosted here: scram.test" in one_error_line(err)


def test_export_then_import_through_the_command_line(run, db, tmp_path, config_path):
    assert run("import", str(ejabberd_main_file()))[0] == 0
    status, out, err = run("export", str(tmp_path / "all.xml"))
    assert status == 0, err
    assert f"exported 3 account(s) of 2 host(s) to {tmp_path / 'all.xml'}" in out
    assert (tmp_path / "all.xml").stat().st_mode & 0o077 == 0
    status, _out, err = run("export", str(tmp_path / "all.xml"))
    assert status == 1 and "exists" in one_error_line(err)
    status, out, _err = run("export", "--domain", "scram.test", str(tmp_path / "dir") + "/")
    assert status == 0 and "exported 1 account(s) of 1 host(s)" in out
    assert (tmp_path / "dir" / "scram.test" / "nurse.xml").is_file()
    status, _out, err = run("export", "--domain", "elsewhere.test", str(tmp_path / "x.xml"))
    assert status == 1 and "elsewhere.test is not hosted" in one_error_line(err)

    exported = pie.load_import([tmp_path / "all.xml"])
    assert [u.jid for u in exported.users] == ["juliet@plain.test", "romeo@plain.test", "nurse@scram.test"]
    assert exported.notes == [] and exported.ignored == {}
    juliet = db(pie.read_user_txn, "juliet@plain.test")
    [again] = [u for u in exported.users if u.jid == "juliet@plain.test"]
    assert (again.roster, again.credentials, again.private) == (juliet.roster, juliet.credentials, juliet.private)


BAD = [
    ("not xml", "<server-data xmlns='urn:xmpp:pie:0'><host", "line 1: not well-formed XML"),
    ("entities", "<!DOCTYPE x [<!ENTITY a 'aaaa'>]><server-data xmlns='urn:xmpp:pie:0'/>",
     "DTDs and entity declarations are not allowed"),
    ("wrong root", "<user xmlns='urn:xmpp:pie:0' name='a'/>", "not <server-data xmlns='urn:xmpp:pie:0'>"),
    ("no name", "<server-data xmlns='urn:xmpp:pie:0'><host jid='plain.test'><user/></host></server-data>",
     "<user> without name="),
    ("bad host", "<server-data xmlns='urn:xmpp:pie:0'><host jid='a@b'/></server-data>", "<host> needs jid="),
    ("include outside", "<server-data xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude'>"
                        "<xi:include href='../secret.xml'/></server-data>", "points outside"),
    ("absolute include", "<server-data xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude'>"
                         "<xi:include href='/etc/passwd'/></server-data>", "must be a relative path"),
    ("bad scram", "<server-data xmlns='urn:xmpp:pie:0'><host jid='plain.test'><user name='a'>"
                  "<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'><iter-count>0100"
                  "</iter-count><salt>AA==</salt><server-key>AA==</server-key><stored-key>AA==</stored-key>"
                  "</scram-credentials></user></host></server-data>", "user a@plain.test: SCRAM-SHA-1: <iter-count/>"),
    ("bad subscription", "<server-data xmlns='urn:xmpp:pie:0'><host jid='plain.test'><user name='a'>"
                         "<query xmlns='jabber:iq:roster'><item jid='b@plain.test' subscription='maybe'/></query>"
                         "</user></host></server-data>", "subscription='maybe'"),
    ("twice", "<server-data xmlns='urn:xmpp:pie:0'><host jid='plain.test'><user name='a'/><user name='A'/>"
              "</host></server-data>", "user a@plain.test appears twice"),
]


@pytest.mark.parametrize("text, message", [(t, m) for _n, t, m in BAD], ids=[n for n, _t, _m in BAD])
def test_a_bad_file_is_one_error_line_and_imports_nothing(run, db, tmp_path, text, message):
    (tmp_path / "secret.xml").write_text("<server-data xmlns='urn:xmpp:pie:0'/>")
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / "bad.xml"
    path.write_text("<?xml version='1.0'?>" + text)
    status, out, err = run("import", str(path))
    assert status == 1
    line = one_error_line(err)
    assert message in line and str(path) in line
    assert db(sql_accounts.list_accounts_txn) == []


def test_unknown_data_is_skipped_and_reported(run, db, tmp_path):
    path = tmp_path / "pep.xml"
    path.write_text(
        "<server-data xmlns='urn:xmpp:pie:0'><host jid='plain.test'><user name='alice' password='pw-alice'>"
        "<shopping-list xmlns='urn:example:unknown'/>"
        "<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-512'/>"
        "<query xmlns='jabber:iq:private'><x xmlns='jabber:iq:roster'/></query>"
        "</user></host></server-data>")
    status, out, err = run("import", str(path))
    assert status == 0, err
    assert "ignored {urn:example:unknown}shopping-list (1x)" in err
    assert "ignored scram-credentials mechanism=SCRAM-SHA-512 (1x)" in err
    assert "private storage in reserved namespace 'jabber:iq:roster'" in err
    assert can_log_in(db, "alice@plain.test", "pw-alice") == ["SHA-1", "SHA-256"]


def test_xincludes_of_the_directory_layout_are_followed_from_anywhere(run, db, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(EJABBERD, copy)
    monkeypatch.chdir(tmp_path)
    status, out, err = run("import", str(ejabberd_main_file(copy).relative_to(tmp_path)))
    assert status == 0, err
    assert len(db(sql_accounts.list_accounts_txn)) == 3


def test_import_of_a_real_prosody_export(run, db, config_path):
    """prosody-migrator (Prosody 0.12, mod_storage_xep0227) writes one file per user, repeats
    identical <scram-credentials/> and puts subscription requests in the pie namespace."""
    config_path.write_text(config_path.read_text().replace('"plain.test", "scram.test"', '"pros.test"'))
    files = sorted(str(p) for p in (FIXTURES / "prosody-0.12").glob("*.xml"))
    status, out, err = run("import", *files)
    assert status == 0, err
    assert "imported 2 account(s) of 1 host(s)" in out
    assert "given more than once" in err
    assert can_log_in(db, "alice@pros.test", "al1ce-pw") == ["SHA-1"]
    assert can_log_in(db, "bob@pros.test", "b0b-pw") == ["SHA-1"]
    assert db(pie.read_user_txn, "alice@pros.test").roster == [
        RosterItem("bob@pros.test", "Bob", "both", groups=("Friends",)),
        RosterItem("carol@elsewhere.test", pending_in=True, in_roster=False),
        RosterItem("dave@elsewhere.test", None, "none", ask=True),
    ]


PEP_EXAMPLE = """<?xml version='1.0' encoding='UTF-8'?>
<server-data xmlns='urn:xmpp:pie:0'>
  <host jid='plain.test'>
    <user name='romeo' password='r0meo pw'>
      <pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>
        <configure node='urn:xmpp:bookmarks:1'>
          <x xmlns='jabber:x:data' type='form'>
            <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>
            <field var='pubsub#access_model'><value>whitelist</value></field>
            <field var='pubsub#max_items'><value>max</value></field>
            <field var='pubsub#itemreply'><value>owner</value></field>
          </x>
        </configure>
        <affiliations node='urn:xmpp:bookmarks:1'>
          <affiliation jid='mercutio@example.net' affiliation='member'/>
        </affiliations>
        <configure node='http://jabber.org/protocol/nick'>
          <x xmlns='jabber:x:data' type='form'>
            <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>
            <field var='pubsub#access_model'><value>open</value></field>
          </x>
        </configure>
      </pubsub>
      <pubsub xmlns='http://jabber.org/protocol/pubsub'>
        <items node='urn:xmpp:bookmarks:1'>
          <item id='theplay@conference.shakespeare.lit'>
            <conference xmlns='urn:xmpp:bookmarks:1' name='The Play&apos;s the Thing' autojoin='true'>
              <nick>Romeo</nick>
            </conference>
          </item>
          <item id='orchard@conference.shakespeare.lit'>
            <conference xmlns='urn:xmpp:bookmarks:1' name='The Orchard' autojoin='1'><nick>Romeo</nick></conference>
          </item>
        </items>
        <items node='http://jabber.org/protocol/nick'>
          <item id='current'><nick xmlns='http://jabber.org/protocol/nick'>Romy</nick></item>
        </items>
      </pubsub>
    </user>
  </host>
</server-data>
"""


def test_pep_nodes_of_the_xeps_example_are_imported(run, db, tmp_path):
    path = tmp_path / "pep.xml"
    path.write_text(PEP_EXAMPLE)
    status, _out, err = run("import", str(path))
    assert status == 0, err
    assert "ignored PEP node option pubsub#itemreply (1x)" in err
    assert "ignored PEP <affiliations/>" in err
    romeo = db(pie.read_user_txn, "romeo@plain.test")
    bookmarks, items = romeo.pep["urn:xmpp:bookmarks:1"]
    assert bookmarks["pubsub#access_model"] == "whitelist" and bookmarks["pubsub#max_items"] == "256"
    assert [i.item_id for i in items] == ["theplay@conference.shakespeare.lit", "orchard@conference.shakespeare.lit"]
    assert "name='The Play&apos;s the Thing'" in items[0].xml
    nick_config, [nick] = romeo.pep["http://jabber.org/protocol/nick"]
    assert nick_config["pubsub#access_model"] == "open"
    assert nick.xml == "<nick xmlns='http://jabber.org/protocol/nick'>Romy</nick>"
