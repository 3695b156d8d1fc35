"""Tests for tigasepy.tap, the twistd glue: options, first start, overrides, plugin.

``build_service`` is replaced by a recorder here, so these tests need nothing of the
server tree and run no reactor.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import IServiceMaker, MultiService
from twisted.plugin import getPlugins
from twisted.python import usage

from tigasepy import tap
from tigasepy.config import ConfigError, default_config_text, load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run each test in an empty folder with a fixed default domain."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tap, "default_domain", lambda: "host.example")
    return tmp_path


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Replace ``tap.build_service`` with a recorder of (config, reactor) calls."""
    calls: list[tuple[Any, Any]] = []

    def fake_build(config: Any, reactor: Any) -> MultiService:
        calls.append((config, reactor))
        return MultiService()

    monkeypatch.setattr(tap, "build_service", fake_build)
    return calls


def parse(*argv: str) -> tap.Options:
    """Parse ``argv`` as the plugin's command line."""
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


def write_config(path: Path, domains: str = '["configured.example"]', extra: str = "") -> None:
    """Write a small valid config file."""
    path.write_text(f'[server]\ndomains = {domains}\ndata_dir = "state"\n{extra}', encoding="utf-8")


def test_defaults_use_tigasepy_toml_in_the_current_directory(in_tmp_dir: Path) -> None:
    """Without options: config ``tigasepy.toml`` in the cwd, no overrides."""
    options = parse()
    assert options["config"] == "tigasepy.toml"
    assert options["domain"] is None and options["c2s-port"] is None and options["data-dir"] is None
    assert options.loaded_config.source == str(in_tmp_dir / "tigasepy.toml")


def test_first_start_writes_the_default_config_for_the_host_name(in_tmp_dir: Path, log_events: list) -> None:
    """A missing config file is written with the machine's domain, logged, then loaded."""
    options = parse()
    written = (in_tmp_dir / "tigasepy.toml").read_text(encoding="utf-8")
    assert written == default_config_text("host.example")
    assert options.loaded_config.server.domains == ("host.example",)
    assert any("wrote a default one" in e.get("log_format", "") and e.get("domain") == "host.example"
               for e in log_events)


def test_first_start_with_domain_writes_that_domain(in_tmp_dir: Path) -> None:
    """``--domain`` on first start becomes the domain of the written file."""
    parse("--config", "etc/server.toml", "--domain", "chat.example")
    assert load_config(in_tmp_dir / "etc" / "server.toml").server.domains == ("chat.example",)


def test_existing_config_is_not_rewritten(in_tmp_dir: Path, log_events: list) -> None:
    """A config that exists is read as it is."""
    write_config(in_tmp_dir / "tigasepy.toml")
    before = (in_tmp_dir / "tigasepy.toml").read_text()
    options = parse()
    assert (in_tmp_dir / "tigasepy.toml").read_text() == before
    assert options.loaded_config.server.domains == ("configured.example",)
    assert not [e for e in log_events if "wrote a default one" in e.get("log_format", "")]


def test_domain_override_replaces_the_domain_list(in_tmp_dir: Path) -> None:
    """``--domain`` serves only that domain for this run; the file keeps its list."""
    write_config(in_tmp_dir / "tigasepy.toml", domains='["a.example", "b.example"]')
    options = parse("-d", "only.example")
    assert options.loaded_config.server.domains == ("only.example",)
    assert load_config(in_tmp_dir / "tigasepy.toml").server.domains == ("a.example", "b.example")


def test_port_and_data_dir_overrides(in_tmp_dir: Path) -> None:
    """``--c2s-port`` and ``--data-dir`` (relative to the cwd) override the file."""
    (in_tmp_dir / "conf").mkdir()
    write_config(in_tmp_dir / "conf" / "t.toml")
    options = parse("--config", "conf/t.toml", "--c2s-port", "5333", "--data-dir", "var/xmpp")
    config = options.loaded_config
    assert config.c2s.port == 5333
    assert config.data_path == in_tmp_dir / "var" / "xmpp"
    assert config.c2s.direct_tls_port == 5223  # untouched


def test_without_data_dir_override_data_is_beside_the_config(in_tmp_dir: Path) -> None:
    """The file's relative data_dir stays relative to the config file's folder."""
    (in_tmp_dir / "conf").mkdir()
    write_config(in_tmp_dir / "conf" / "t.toml")
    assert parse("-c", "conf/t.toml").loaded_config.data_path == in_tmp_dir / "conf" / "state"


@pytest.mark.parametrize("port", ["http", "-1", "65536"])
def test_bad_port_is_a_usage_error(port: str) -> None:
    """A port that is not 0..65535 is refused while parsing."""
    with pytest.raises(usage.UsageError):
        parse("--c2s-port", port)


def test_invalid_config_is_a_one_line_usage_error(in_tmp_dir: Path) -> None:
    """A config error names the option, in a usage error twistd prints as one line."""
    write_config(in_tmp_dir / "tigasepy.toml", extra="[c2s]\nmax_depth = 1\n")
    with pytest.raises(usage.UsageError) as caught:
        parse()
    assert "c2s.max_depth" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bad_domain_override_is_a_usage_error(in_tmp_dir: Path) -> None:
    """An override is validated like the file."""
    write_config(in_tmp_dir / "tigasepy.toml")
    with pytest.raises(usage.UsageError) as caught:
        parse("--domain", "user@example.org")
    assert "server.domains" in str(caught.value)


def test_unwritable_first_config_is_a_usage_error(in_tmp_dir: Path) -> None:
    """A first config that cannot be written is reported, not raised as a traceback."""
    (in_tmp_dir / "file").write_text("")
    with pytest.raises(usage.UsageError) as caught:
        parse("--config", "file/tigasepy.toml")
    assert "cannot write" in str(caught.value)


def test_make_service_builds_the_tree_with_the_loaded_config(built: list) -> None:
    """``makeService`` hands the loaded config and the reactor to ``build_service``."""
    from twisted.internet import reactor

    options = parse("--domain", "x.example")
    service = tap.makeService(options)
    assert isinstance(service, MultiService)
    [(config, used_reactor)] = built
    assert config is options.loaded_config
    assert used_reactor is reactor


def test_make_service_loads_the_config_when_options_were_not_parsed(in_tmp_dir: Path, built: list) -> None:
    """Called with unparsed options (an embedder), ``makeService`` still loads the file."""
    write_config(in_tmp_dir / "tigasepy.toml")
    tap.makeService(tap.Options())
    assert built[0][0].server.domains == ("configured.example",)


def test_make_service_ends_with_one_line_on_config_errors(in_tmp_dir: Path, built: list) -> None:
    """Without parseOptions, a config error ends the process with a message, not a traceback."""
    write_config(in_tmp_dir / "tigasepy.toml", extra="[nonsense]\n")
    with pytest.raises(SystemExit) as caught:
        tap.makeService(tap.Options())
    assert str(caught.value).startswith("tigasepy: configuration error: nonsense")
    assert built == []


def test_config_error_while_building_ends_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A config error found while building the tree (e.g. a missing extension) is one line too."""
    def failing_build(config: Any, reactor: Any) -> MultiService:
        raise ConfigError("cannot load 'x:Y'", ("extensions", "x", "class"))

    monkeypatch.setattr(tap, "build_service", failing_build)
    with pytest.raises(SystemExit) as caught:
        tap.makeService(parse())
    assert str(caught.value) == "tigasepy: configuration error: extensions.x.class: cannot load 'x:Y'"


def test_plugin_is_discovered_by_twistd() -> None:
    """twistd finds the ``tigasepy`` ServiceMaker and its options are ours."""
    makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
    maker = makers["tigasepy"]
    assert maker.module == "tigasepy.tap"
    assert isinstance(maker.options(), tap.Options)


def test_plugins_folder_is_not_a_package() -> None:
    """An __init__.py in twisted/plugins would hide Twisted's own plugins."""
    assert not (REPO / "twisted" / "plugins" / "__init__.py").exists()
    assert not (REPO / "twisted" / "__init__.py").exists()


def run_twistd(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``twistd`` from this interpreter's environment, with the working tree first."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", *argv],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )


def test_twistd_help_lists_our_options(in_tmp_dir: Path) -> None:
    """``twistd tigasepy --help`` works and documents the overrides."""
    result = run_twistd(in_tmp_dir, "tigasepy", "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--config", "--domain", "--c2s-port", "--data-dir"):
        assert option in result.stdout
    assert not (in_tmp_dir / "tigasepy.toml").exists()  # --help starts nothing


def test_twistd_reports_a_bad_config_in_one_line(in_tmp_dir: Path) -> None:
    """``twistd -n tigasepy`` with a bad config exits 1 with the option's path, no traceback."""
    write_config(in_tmp_dir / "tigasepy.toml", extra="[c2s]\nport = 70000\n")
    result = run_twistd(in_tmp_dir, "-n", "--pidfile=", "tigasepy")
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "configuration error: c2s.port" in output
    assert "Traceback" not in output


def test_default_domain_prefers_the_host_name_over_a_loopback_fqdn(monkeypatch):
    import socket

    from tigasepy.config import default_domain

    monkeypatch.setattr(socket, "getfqdn", lambda: "localhost")
    monkeypatch.setattr(socket, "gethostname", lambda: "chat-box")
    assert default_domain() == "chat-box"
    monkeypatch.setattr(socket, "getfqdn", lambda: "xmpp.example.org.")
    assert default_domain() == "xmpp.example.org"


def test_c2s_listeners_use_the_configured_backlog(tmp_path):
    from twisted.internet.testing import MemoryReactorClock

    from tigasepy.config import config_from_dict
    from tigasepy.service import build_service

    config = config_from_dict({"server": {"domains": ["example.org"], "data_dir": str(tmp_path)},
                               "c2s": {"port": 15222, "direct_tls_port": 15223, "listen_backlog": 77},
                               "storage": {"backend": "memory"}, "s2s": {"port": 0, "direct_tls_port": 0}})
    service = build_service(config, MemoryReactorClock())
    assert service.c2s_endpoint(config.c2s, direct_tls=False)._backlog == 77
    assert service.c2s_endpoint(config.c2s, direct_tls=True)._backlog == 77


def test_startup_objects_are_frozen_out_of_gc_once_the_service_has_started() -> None:
    """twistd's service is frozen only when its start completes (stores and listeners up),
    so what start-up allocated is not walked by every later full collection."""
    import gc

    from twisted.internet import defer

    class Starting:
        started: defer.Deferred = defer.Deferred()

    service = Starting()
    gc.unfreeze()
    try:
        tap.freeze_after_start(service)
        assert gc.get_freeze_count() == 0          # not before the start has finished
        service.started.callback("up")
        assert gc.get_freeze_count() > 0
        assert service.started.result == "up"      # the start's result is passed on
    finally:
        gc.unfreeze()
