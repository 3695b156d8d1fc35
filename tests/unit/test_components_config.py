"""[components]: listener options, the three kinds of component tables, secrets, and the docs' examples."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tigasepy.components import ComponentListenerConfig, components_plan, configured_components
from tigasepy.config import ConfigError, config_from_dict

ROOT = Path(__file__).resolve().parents[2]
ECHO = "examples.echo_component:EchoComponent"


def plan(section, base_dir=None):
    return components_plan(section, base_dir)


def test_defaults_listen_on_loopback():
    listener = plan({}).listener
    assert listener == ComponentListenerConfig()
    assert (listener.interface, listener.port, listener.tls) == ("127.0.0.1", 5347, False)


def test_three_kinds_of_tables(tmp_path):
    (tmp_path / "gw.secret").write_text("from-file\nignored second line\n")
    p = plan({
        "port": 6000,
        "echo": {"class": ECHO, "domain": "Echo.Example.org", "prefix": "> "},
        "gw": {"external": True, "domain": "gw.example.org", "secret_file": "gw.secret"},
        "out": {"class": ECHO, "domain": "out.example.com", "connect": "xmpp.example.com:5347",
                "secret": "inline", "tls": True, "ca_file": "ca.pem"},
    }, tmp_path)
    assert p.listener.port == 6000
    [(cls, domain, config)] = p.local
    assert (cls.__name__, domain, config.prefix) == ("EchoComponent", "echo.example.org", "> ")
    [external] = p.external
    assert (external.name, external.domain, external.secret) == ("gw", "gw.example.org", "from-file")
    [out] = p.outgoing
    assert (out.host, out.port, out.secret, out.tls, out.ca_file) == (
        "xmpp.example.com", 5347, "inline", True, str(tmp_path / "ca.pem"))
    assert sorted(p.domains) == ["echo.example.org", "gw.example.org", "out.example.com"]
    assert configured_components({"echo": {"class": ECHO, "domain": "e.example.org"},
                                  "gw": {"external": True, "domain": "g.example.org", "secret": "x"}})[0][1] == \
        "e.example.org"


def test_secrets_never_show_in_reprs():
    p = plan({"gw": {"external": True, "domain": "gw.example.org", "secret": "hunter2-secret"},
              "out": {"class": ECHO, "domain": "o.example.org", "connect": "h:1", "secret": "other-secret"}})
    assert "hunter2-secret" not in repr(p) and "other-secret" not in repr(p)


@pytest.mark.parametrize("section,where,message", [
    ({"prot": 1}, "components.prot", "unknown option"),
    ({"port": 70000}, "components.port", "TCP port"),
    ({"keepalive_timeout_s": 0}, "components.keepalive_timeout_s", ">= 1"),
    ({"port": {"class": ECHO}}, "components.port", "listener option"),
    ({"gw": {"external": True, "domain": "gw.example.org"}}, "components.gw.secret", "exactly one"),
    ({"gw": {"external": True, "domain": "gw.example.org", "secret": "a", "secret_file": "b"}},
     "components.gw.secret", "exactly one"),
    ({"gw": {"external": True, "domain": "gw.example.org", "secret": ""}}, "components.gw.secret", "non-empty"),
    ({"gw": {"external": True, "domain": "gw.example.org", "secret_file": "/nonexistent/x"}},
     "components.gw.secret_file", "cannot read"),
    ({"gw": {"external": True, "domain": "gw.example.org", "class": ECHO, "secret": "x"}},
     "components.gw.external", "no class"),
    ({"gw": {"external": "yes", "domain": "gw.example.org", "secret": "x"}}, "components.gw.external", "true or false"),
    ({"gw": {"external": True, "domain": "gw.example.org", "secret": "x", "prefix": "p"}},
     "components.gw.prefix", "unknown option"),
    ({"gw": {"external": True, "domain": "u@gw.example.org", "secret": "x"}}, "components.gw.domain", "domain"),
    ({"a": {"class": ECHO, "domain": "x.example.org"}, "b": {"class": ECHO, "domain": "X.example.org"}},
     "components.b.domain", "also"),
    ({"e": {"class": ECHO, "domain": "e.example.org", "secret": "x"}}, "components.e.secret", "only for"),
    ({"o": {"class": ECHO, "domain": "o.example.org", "connect": "nohost", "secret": "x"}},
     "components.o.connect", "host:port"),
    ({"o": {"class": ECHO, "domain": "o.example.org", "connect": "h:0", "secret": "x"}},
     "components.o.connect", "host:port"),
    ({"o": {"class": ECHO, "domain": "o.example.org", "connect": "h:5347"}}, "components.o.secret", "exactly one"),
    ({"o": {"domain": "o.example.org", "connect": "h:5347", "secret": "x"}}, "components.o.class", "class"),
])
def test_mistakes_name_the_option(section, where, message):
    with pytest.raises(ConfigError) as raised:
        plan(section)
    assert ".".join(raised.value.path) == where
    assert message in raised.value.message


def test_an_empty_secret_file_is_refused(tmp_path):
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="no secret"):
        plan({"gw": {"external": True, "domain": "gw.example.org", "secret_file": str(tmp_path / "empty")}})


def test_config_load_checks_listener_options_but_accepts_tables():
    base = {"server": {"domains": ["example.org"]}}
    config_from_dict({**base, "components": {"port": 0, "gw": {"external": True, "domain": "g.example.org",
                                                               "secret": "x"}}})
    with pytest.raises(ConfigError, match="components.listen_port"):
        config_from_dict({**base, "components": {"listen_port": 1}})
    with pytest.raises(ConfigError, match="components"):
        config_from_dict({**base, "components": 5})


def test_a_component_domain_may_not_be_a_hosted_domain(tmp_path):
    from twisted.internet.task import Clock

    from tigasepy.service import build_service

    config = config_from_dict({"server": {"domains": ["example.org"], "data_dir": str(tmp_path)},
                               "storage": {"backend": "memory"},
                               "components": {"gw": {"external": True, "domain": "example.org", "secret": "x"}}})
    with pytest.raises(ConfigError, match="hosted domain"):
        build_service(config, Clock())


def test_the_service_builds_the_listener_only_for_external_components(tmp_path):
    from twisted.internet.task import Clock

    from tigasepy.service import build_service

    base = {"server": {"domains": ["example.org"], "data_dir": str(tmp_path)}, "storage": {"backend": "memory"}}
    service = build_service(config_from_dict({**base, "components": {
        "echo": {"class": ECHO, "domain": "echo.example.org"}}}), Clock())
    assert service.external_components is None
    assert "components" not in [l.name for l in service.listeners]
    service = build_service(config_from_dict({**base, "components": {
        "port": 0, "gw": {"external": True, "domain": "gw.example.org", "secret": "x"}}}), Clock())
    assert service.external_components is not None
    assert "components" not in [l.name for l in service.listeners]
    service = build_service(config_from_dict({**base, "components": {
        "gw": {"external": True, "domain": "gw.example.org", "secret": "x"}}}), Clock())
    [listener] = [l for l in service.listeners if l.name == "components"]
    assert (listener.endpoint._port, listener.endpoint._interface) == (5347, "127.0.0.1")


def _toml_blocks(text: str) -> list[str]:
    return [block.split("```", 1)[0] for block in text.split("```toml\n")[1:]]


def test_the_examples_in_the_docs_are_valid(tmp_path):
    for name in ("helpdesk.secret", "gateway.secret"):
        (tmp_path / name).write_text("s\n")
    components = (ROOT / "docs" / "components.md").read_text()
    blocks = _toml_blocks(components)
    assert len(blocks) == 4     # in-process, MUC, accept, connect-out
    for block in blocks:
        raw = tomllib.loads(block)
        plan(raw["components"], tmp_path)
        config_from_dict({"server": {"domains": ["example.org"]}, **raw})
    configuration = (ROOT / "docs" / "configuration.md").read_text()
    section = configuration[configuration.index("## `[components]`"):configuration.index("## Relaxing security")]
    [block] = _toml_blocks(section)
    p = plan(tomllib.loads(block)["components"], tmp_path)
    assert (len(p.local), len(p.external), len(p.outgoing)) == (1, 1, 1)
