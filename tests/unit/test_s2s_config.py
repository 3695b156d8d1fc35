"""The ``[s2s]`` section (federation options, static routes, limits)."""

from __future__ import annotations

from typing import Any

import pytest

from tigasepy.config import ConfigError, S2SConfig, config_from_dict, parse_s2s_route


def load(**s2s: Any) -> S2SConfig:
    return config_from_dict({"server": {"domains": ["a.example"]}, "s2s": s2s}).s2s


def test_defaults_are_secure_and_standard() -> None:
    s2s = load()
    assert (s2s.enabled, s2s.port, s2s.direct_tls_port, s2s.tls_required, s2s.dialback, s2s.sasl_external) == (
        True, 5269, 5270, True, True, True)
    assert s2s.routes == {} and s2s.insecure_domains == () and s2s.ca_file == ""


def test_static_routes_parse_into_targets() -> None:
    s2s = load(routes={"b.example": "127.0.0.1:15269, tls://[::1]:15270 xmpp.b.example:5269"})
    assert s2s.route_targets("b.example") == (("127.0.0.1", 15269, False), ("::1", 15270, True),
                                               ("xmpp.b.example", 5269, False))
    assert s2s.route_targets("c.example") is None


@pytest.mark.parametrize("value", ["", "127.0.0.1", "127.0.0.1:0", "host:99999", "https://h:1", "h: 1"])
def test_bad_route_targets_name_the_route(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(routes={"b.example": value})
    assert info.value.path[:3] == ("s2s", "routes", "b.example")


@pytest.mark.parametrize("option", ["insecure_domains", "unverified_domains"])
def test_domain_lists_reject_non_domains(option: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(**{option: ["user@b.example"]})
    assert info.value.path == ("s2s", option)


@pytest.mark.parametrize("option,minimum", [
    ("idle_timeout_s", 1), ("connect_timeout_s", 1), ("max_connections_per_peer", 1),
    ("unauthenticated_stanza_size_limit_bytes", 4096),
    ("max_unauthenticated", 1), ("max_queued_stanzas", 1), ("stanza_size_limit_bytes", 10000), ("max_depth", 4)])
def test_limits_at_and_below_their_minimum(option: str, minimum: int) -> None:
    assert getattr(load(**{option: minimum}), option) == minimum
    with pytest.raises(ConfigError) as info:
        load(**{option: minimum - 1})
    assert info.value.path == ("s2s", option)


def test_ports_may_be_disabled() -> None:
    s2s = load(port=0, direct_tls_port=0)
    assert (s2s.port, s2s.direct_tls_port) == (0, 0)
    with pytest.raises(ConfigError):
        load(port=70000)


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load(dialback_secret="inline")
    assert info.value.path == ("s2s", "dialback_secret")


def test_parse_route_direct() -> None:
    assert parse_s2s_route("tls://h.example:5270", ("x",)) == (("h.example", 5270, True),)


def test_the_documented_examples_load() -> None:
    """Every TOML block of the [s2s] section of docs/configuration.md is a valid config."""
    import re
    import tomllib
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    section = text[text.index("## `[s2s]`"):text.index("## `[storage]`")]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    for block in blocks:
        raw = tomllib.loads(block)
        s2s = config_from_dict({"server": {"domains": ["a.example"]}, **raw}).s2s
        assert s2s.routes


def test_the_default_config_file_shows_every_option_at_its_default() -> None:
    """The commented [s2s] section written on first start names every option with its default."""
    import dataclasses
    import re

    from tigasepy.config import default_config_text

    text = default_config_text("example.org")
    section = text[text.index("[s2s]\n"):text.index("[storage]\n")]
    defaults = S2SConfig()
    for f in dataclasses.fields(S2SConfig):
        if f.name == "routes":
            assert "# [s2s.routes]" in section
            continue
        match = re.search(rf"^# {f.name} = (.+?)(\s+#.*)?$", section, re.M)
        assert match, f.name
        value = getattr(defaults, f.name)
        shown = match.group(1)
        expected = (str(value).lower() if isinstance(value, bool) else "[]" if value == () else
                    f'"{value}"' if isinstance(value, str) else str(value))
        assert shown == expected, (f.name, shown, expected)


def test_the_unauthenticated_limit_may_not_exceed_the_stanza_limit() -> None:
    with pytest.raises(ConfigError) as info:
        load(stanza_size_limit_bytes=20000, unauthenticated_stanza_size_limit_bytes=20001)
    assert info.value.path == ("s2s", "unauthenticated_stanza_size_limit_bytes")
