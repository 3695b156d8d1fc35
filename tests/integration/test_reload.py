"""Dynamic reconfiguration of a running server (``TigaseService.reload``), over real sockets:
extensions switched off and on, c2s limits, a listener moved, components added and removed,
and an invalid configuration that changes nothing. Sessions the change does not concern
stay connected throughout."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import pytest

from support.server import LOOPBACK, RunningServer, free_port
from support.xmpp_clients import DEFAULT_TIMEOUT, ClientPool, TestClient, asyncio_test, is_chat
from tigasepy.config import ConfigError

VERSION = "jabber:iq:version"


async def features(client: TestClient) -> set[str]:
    info = await client.plugin["xep_0030"].get_info(jid="localhost", timeout=DEFAULT_TIMEOUT)
    return set(info["disco_info"]["features"])


def with_extensions(server: RunningServer, **tables: dict) -> object:
    config = server.service.config
    return dataclasses.replace(config, extensions={**config.extensions, **tables})


@asyncio_test
async def test_disabling_an_extension_removes_its_feature_and_keeps_the_session(
        xmpp_server: RunningServer, clients: ClientPool) -> None:
    """XEP-0092 off: disco no longer lists it and its IQs get service-unavailable; the
    logged-in session stays; on again, it is back."""
    alice = await clients.login("alice", resource="r")
    assert VERSION in await features(alice)
    report = xmpp_server.service.reload(with_extensions(xmpp_server, version={"enabled": False}))
    assert report.ok and "extension version disabled" in report.changes
    assert VERSION not in await features(alice)
    assert alice.session_started and not alice.stream_errors.items
    report = xmpp_server.service.reload(with_extensions(xmpp_server, version={"enabled": True}))
    assert "extension version enabled" in report.changes
    assert VERSION in await features(alice)


@asyncio_test
async def test_a_smaller_stanza_limit_applies_to_new_and_open_connections(
        xmpp_server: RunningServer, clients: ClientPool) -> None:
    """After the reload a 20 kB message is refused on a new connection and on one that was
    open before; other sessions go on."""
    before = await clients.login("alice", resource="before")
    bob = await clients.login("bob", resource="b")
    config = xmpp_server.service.config
    report = xmpp_server.service.reload(dataclasses.replace(
        config, c2s=dataclasses.replace(config.c2s, stanza_size_limit_bytes=10000)))
    assert report.ok and any("stanza_size_limit_bytes" in c for c in report.changes)
    new = await clients.login("alice", resource="new")
    for client in (new, before):
        client.send_message(mto="bob@localhost/b", mbody="x" * 20000, mtype="chat")
        assert await client.stream_errors.wait_for() == "policy-violation"
    new_small = await clients.login("alice", resource="small")
    new_small.send_message(mto="bob@localhost/b", mbody="small enough", mtype="chat")
    await bob.messages.wait_for(is_chat("small enough"))


@asyncio_test
async def test_moving_the_c2s_listener_keeps_open_streams(xmpp_server: RunningServer, clients: ClientPool) -> None:
    """A new port: clients connect there; the old port is closed; a session opened on the
    old port goes on."""
    alice = await clients.login("alice", resource="old-port")
    old_port = xmpp_server.c2s_port
    port = free_port()
    config = xmpp_server.service.config
    report = xmpp_server.service.reload(dataclasses.replace(config, c2s=dataclasses.replace(config.c2s, port=port)))
    assert f"c2s listener on {LOOPBACK}:{port}" in report.changes
    for _ in range(100):
        listener = xmpp_server.service.listener("c2s")
        if listener.port is not None:
            break
        await asyncio.sleep(0.02)
    assert xmpp_server.c2s_port == port
    bob = clients.new("bob", resource="new-port")
    await bob.login(port)
    alice.send_message(mto="bob@localhost/new-port", mbody="from the old port", mtype="chat")
    await bob.messages.wait_for(is_chat("from the old port"))
    with pytest.raises(OSError):
        socket.create_connection((LOOPBACK, old_port), timeout=1).close()


@asyncio_test
async def test_components_come_and_go(xmpp_server: RunningServer, clients: ClientPool) -> None:
    """An in-process component added by a reload answers; removed, its domain is no longer routed to it."""
    alice = await clients.login("alice", resource="r")
    config = xmpp_server.service.config
    echo = {"class": "examples.echo_component:EchoComponent", "domain": "echo.localhost", "prefix": "echo: "}
    report = xmpp_server.service.reload(dataclasses.replace(config, components={"echo": echo}))
    assert "component echo.localhost added" in report.changes
    alice.send_message(mto="echo.localhost", mbody="ping", mtype="chat")
    await alice.messages.wait_for(is_chat("echo: ping"))
    report = xmpp_server.service.reload(dataclasses.replace(config, components={}))
    assert "component echo.localhost removed" in report.changes
    from examples.echo_component import EchoComponent

    assert not isinstance(xmpp_server.service.router.destination("echo.localhost"), EchoComponent)
    assert not xmpp_server.service.components


@asyncio_test
async def test_an_invalid_configuration_changes_nothing(xmpp_server: RunningServer, clients: ClientPool,
                                                        log_events: list) -> None:
    """A file that does not load is logged; the server keeps its configuration and sessions."""
    alice = await clients.login("alice", resource="r")
    before = xmpp_server.service.config

    def broken() -> object:
        raise ConfigError("must be >= 10000", ("c2s", "stanza_size_limit_bytes"))

    xmpp_server.service.config_loader = broken
    report = xmpp_server.service.reload_from_source()
    assert not report.ok and "stanza_size_limit_bytes" in report.error
    assert xmpp_server.service.config is before
    bad_extension = with_extensions(xmpp_server, nonsense={"class": "no.such.module:Thing"})
    report = xmpp_server.service.reload(bad_extension)
    assert not report.ok and xmpp_server.service.config is before
    assert VERSION in await features(alice)
    assert any("reload refused" in str(e.get("log_format", "")) for e in log_events)


@asyncio_test
async def test_settings_that_need_a_restart_are_reported(xmpp_server: RunningServer) -> None:
    """Changing the storage is not applied on the fly; the report says so and the old one stays."""
    config = xmpp_server.service.config
    report = xmpp_server.service.reload(dataclasses.replace(
        config, storage=dataclasses.replace(config.storage, path="elsewhere.sqlite")))
    assert report.ok and "[storage]" in report.restart
    assert xmpp_server.service.config.storage.path == config.storage.path


@pytest.mark.parametrize("server_overrides", [{"server": {"admins": ["alice@localhost"]}}])
@asyncio_test
async def test_the_admin_reload_command_applies_the_file(xmpp_server: RunningServer, clients: ClientPool) -> None:
    """An admin runs "Reload Configuration" (ad-hoc): the file's new extension settings
    apply, and the admin's own session stays."""
    COMMANDS = "http://jabber.org/protocol/commands"
    config = xmpp_server.service.config
    xmpp_server.service.config_loader = lambda: dataclasses.replace(
        config, extensions={**config.extensions, "version": {"enabled": False}})
    alice = await clients.login("alice", resource="console")
    alice.register_plugin("xep_0050")
    assert VERSION in await features(alice)
    done = await alice.plugin["xep_0050"].send_command(
        "localhost", "urn:tigasepy:admin#reload-configuration", timeout=5)
    assert done["command"]["status"] == "completed"
    notes = [n.text for n in done.xml.iter(f"{{{COMMANDS}}}note")]
    assert "Applied: extension version disabled" in notes
    assert VERSION not in await features(alice)


def _logins_logged(events: list[dict]) -> int:
    return sum(1 for e in events if e.get("log_format", "").startswith("{user}@{domain} authenticated with"))


@pytest.mark.parametrize("server_overrides", [{"server": {"log_level": "info"}}])
@asyncio_test
async def test_log_level_hides_debug_events_and_a_reload_changes_it(
        log_events: list[dict], xmpp_server: RunningServer, clients: ClientPool) -> None:
    """At log_level = "info" a login leaves no debug event (none reaches any observer); after
    a reload to "debug" the next login is logged, without a restart. (``log_events`` comes
    first: the server, started after it, sets the level.)"""
    await clients.login("alice", resource="quiet")
    assert _logins_logged(log_events) == 0
    assert not [e for e in log_events if e.get("log_namespace", "").startswith("tigasepy")
                and e.get("log_level").name == "debug"]
    config = xmpp_server.service.config
    report = xmpp_server.service.reload(dataclasses.replace(
        config, server=dataclasses.replace(config.server, log_level="debug")))
    assert report.ok and "[server] log_level = debug" in report.changes
    await clients.login("bob", resource="loud")
    assert _logins_logged(log_events) == 1
