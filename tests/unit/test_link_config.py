"""``[server] roles`` and ``[link]``: defaults, validation with option paths, the documented examples."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tigasepy.config import ROLES, ConfigError, config_from_dict, parse_address

DOMAIN = {"domains": ["example.org"]}
ROOT = Path(__file__).resolve().parents[2]


def load(server: dict | None = None, link: dict | None = None):
    return config_from_dict({"server": {**DOMAIN, **(server or {})}, "link": link or {}})


def test_all_roles_by_default_and_no_link():
    """Without roles the process is the all-in-one server; no link is needed."""
    config = load()
    assert config.server.roles == ROLES == ("c2s", "s2s", "sm")
    assert config.link.listen == "" and config.link.connect == ()


@pytest.mark.parametrize("server, link, path, message", [
    ({"roles": ["c2s", "bosh!"]}, {}, "server.roles", "unknown role"),
    ({"roles": []}, {}, "server.roles", "at least one"),
    ({"roles": ["sm", "sm"]}, {}, "server.roles", "twice"),
    ({"roles": ["c2s"]}, {}, "link.listen", "required without the \"sm\" role"),
    ({"roles": ["c2s"]}, {"listen": "127.0.0.1:5350", "connect": ["127.0.0.1:1"]}, "link.connect", "only the session-manager"),
    ({"roles": ["sm"]}, {"listen": "127.0.0.1:5350"}, "link.listen", "connects out"),
    ({"roles": ["c2s", "s2s"]}, {"listen": "127.0.0.1:5350"}, "server.roles", "s2s runs in the session-manager"),
    ({}, {"connect": ["no-port"]}, "link.connect", "not host:port"),
    ({}, {"connect": ["a:1", "a:1"]}, "link.connect", "twice"),
    ({}, {"peer_fingerprints": ["abc"]}, "link.peer_fingerprints", "SHA-256"),
    ({}, {"grace_period_s": -1}, "link.grace_period_s", ">= 0"),
    ({}, {"reconnect_min_s": 5.0, "reconnect_max_s": 1.0}, "link.reconnect_max_s", "reconnect_min_s"),
    ({}, {"max_frame_bytes": 1000}, "link.max_frame_bytes", ">= 65536"),
])
def test_bad_role_and_link_settings_name_the_option(server, link, path, message):
    """Each mistake is one error naming the option."""
    with pytest.raises(ConfigError) as raised:
        load(server, link)
    assert str(raised.value).startswith(path + ":") and message in str(raised.value)


def test_a_connection_manager_and_a_session_manager():
    """The two halves of a split deployment load."""
    cm = load({"roles": ["c2s"]}, {"listen": "10.0.1.5:5350"})
    sm = load({"roles": ["sm", "s2s"]}, {"connect": ["10.0.1.5:5350", "[::1]:5350"],
                                          "peer_fingerprints": ["AB:" * 31 + "AB"]})
    assert not cm.has_role("sm") and sm.has_role("sm") and sm.has_role("s2s")
    assert parse_address("[::1]:5350", ("x",)) == ("::1", 5350)


def test_the_documented_examples_load():
    """The [link] examples of docs/configuration.md and docs/deployment.md are valid configs."""
    for doc in ("configuration.md", "deployment.md"):
        text = (ROOT / "docs" / doc).read_text()
        blocks = [b.split("```", 1)[0] for b in text.split("```toml\n")[1:]]
        split_blocks = [b for b in blocks if "roles" in b and "[link]" in b]
        assert split_blocks, doc
        for block in split_blocks:
            raw = tomllib.loads(block)
            raw.pop("tls", None)       # certificate files that do not exist here
            config_from_dict(raw)


def test_init_of_a_connection_manager_creates_no_database(tmp_path, capsys):
    """``tigasepy init`` in a DMZ process leaves its data directory without a database."""
    from tigasepy import cli

    path = tmp_path / "tigasepy.toml"
    path.write_text('[server]\ndomains = ["example.org"]\nroles = ["c2s"]\n'
                    '[link]\nlisten = "127.0.0.1:5350"\n')
    assert cli.main(["--config", str(path), "init"]) == 0
    assert "no database" in capsys.readouterr().out
    assert list((tmp_path / "data").iterdir()) == []
