"""Virtual hosts added and removed at run time, and per-host extensions, through the
configuration reload (``TigaseService.reload``, ``tigasepy/vhosts.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from support.server import RunningServer
from support.xmpp_clients import ClientPool, LoginFailed, TestClient, asyncio_test, from_deferred


def _with_domains(config: Any, domains: tuple[str, ...], **hosts: Any) -> Any:
    import dataclasses

    from tigasepy.config import HostConfig

    return dataclasses.replace(config, server=dataclasses.replace(config.server, domains=domains),
                               hosts={d.replace("_", "."): HostConfig(**h) for d, h in hosts.items()})


@asyncio_test
async def test_a_host_added_and_removed_at_run_time_leaves_other_sessions_alone(
        xmpp_server: RunningServer, clients: ClientPool) -> None:
    from tigasepy.auth.accounts import make_credentials
    from tigasepy.storage.interfaces import IAccountStore

    alice = await clients.login("alice", available=True)
    before = xmpp_server.config
    report = xmpp_server.service.reload(_with_domains(before, ("localhost", "new.test")))
    assert report.ok and "host new.test added" in report.changes, report.summary()
    assert "[server] domains" not in report.restart
    await from_deferred(xmpp_server.service.stores.get(IAccountStore).create(
        "carol@new.test", make_credentials("carol-new-pw", ("SHA-1", "SHA-256"), 4096)))

    # The regenerated certificate names the new host too.
    carol = TestClient("carol@new.test", "carol-new-pw", cafile=xmpp_server.certificate_path)
    clients.clients.append(carol)
    await carol.login(xmpp_server.c2s_port)
    carol.send_presence()
    alice.send_message(mto="carol@new.test", mbody="welcome", mtype="chat")
    assert await carol.messages.wait_for(lambda m: m["body"] == "welcome")

    report = xmpp_server.service.reload(before)
    assert report.ok and any(c.startswith("host new.test removed (1 session(s) ended") for c in report.changes)
    assert await carol.stream_errors.wait_for(lambda condition: condition == "host-gone")
    await alice.ping_server()                 # alice's session was not touched
    assert xmpp_server.service.sm.sessions_of("alice@localhost")
    again = TestClient("carol@new.test", "carol-new-pw", cafile=xmpp_server.certificate_path)
    clients.clients.append(again)
    with pytest.raises((LoginFailed, AssertionError)):
        await again.login(xmpp_server.c2s_port, timeout=5)


@asyncio_test
async def test_a_reload_applies_per_host_extensions(xmpp_server: RunningServer, clients: ClientPool) -> None:
    from slixmpp.exceptions import IqError

    alice = await clients.login("alice")
    await alice.ping_server()
    report = xmpp_server.service.reload(_with_domains(xmpp_server.config, ("localhost",),
                                                      localhost={"extensions": {"ping": False}}))
    assert "extension ping reloaded (served hosts)" in report.changes, report.summary()
    with pytest.raises(IqError) as refused:
        await alice.ping_server()
    assert refused.value.iq["error"]["condition"] == "service-unavailable"
