"""``tigasepy host add/del/list``: the config file's [server] domains, edited in place."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from tigasepy import cli
from tigasepy.admin.config_file import ConfigEditError, with_domains
from tigasepy.config import load_config


@pytest.fixture
def config_path(tmp_path, capsys) -> Path:
    path = tmp_path / "tigasepy.toml"
    assert cli.main(["--config", str(path), "init", "--domain", "example.org"]) == 0
    path.chmod(0o640)
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


def test_add_list_and_del_keep_the_rest_of_the_file(run, config_path):
    before = config_path.read_text()
    status, out, _err = run("host", "add", "Guest.Example.org")
    assert status == 0 and "added host guest.example.org" in out and "on reload" in out
    assert load_config(config_path).server.domains == ("example.org", "guest.example.org")
    after = config_path.read_text()
    assert after.replace('domains = ["example.org", "guest.example.org"]', 'domains = ["example.org"]') == before
    assert config_path.stat().st_mode & 0o777 == 0o640
    assert run("host", "list")[1] == "example.org\nguest.example.org\n"

    status, out, _err = run("host", "del", "guest.example.org")
    assert status == 0 and "accounts stay in the database" in out
    assert config_path.read_text() == before


@pytest.mark.parametrize("args, message", [
    (("add", "example.org"), "example.org is hosted already"),
    (("del", "other.org"), "other.org is not hosted here"),
    (("del", "example.org"), "the only hosted domain"),
    (("add", "bad domain"), "'bad domain' is not a domain name"),
    (("add", "user@example.net"), "is not a domain name"),
])
def test_mistakes_are_one_line_and_leave_the_file(run, config_path, args, message):
    before = config_path.read_text()
    status, _out, err = run("host", *args)
    assert status == 1
    assert err.count("\n") == 1 and message in err
    assert config_path.read_text() == before


def test_removing_a_host_with_its_own_tables_asks_to_remove_them_first(run, config_path):
    run("host", "add", "corp.example.org")
    with open(config_path, "a") as f:
        f.write('\n[hosts."corp.example.org"]\nregistration = true\n')
    status, _out, err = run("host", "del", "corp.example.org")
    assert status == 1 and 'hosts.corp.example.org: not a hosted domain' in err


def test_multi_line_lists_and_comments():
    text = ('# top\n[server]\n# the hosts\ndomains = [\n  "a.org",  # first\n  "b.org",\n]\n'
            'data_dir = "data"\n[auth]\nauthenticators = ["internal"]\n')
    assert with_domains(text, ["a.org"]) == ('# top\n[server]\n# the hosts\ndomains = ["a.org"]\n'
                                             'data_dir = "data"\n[auth]\nauthenticators = ["internal"]\n')
    with pytest.raises(ConfigEditError, match="no 'domains = \\[...\\]' line"):
        with_domains('[server]\ndata_dir = "d"\n[other]\ndomains = ["x"]\n', ["a.org"])
