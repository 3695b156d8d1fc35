"""Components over real sockets with slixmpp users: the echo component as a separate OS process
over XEP-0114, slixmpp's own XEP-0114 component against our accept port, and the help desk
in-process and as a separate process over XEP-0114 (the same class both ways)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import slixmpp

from support.server import LOOPBACK, RunningServer, free_port
from support.xmpp_clients import CLIENT, DEFAULT_TIMEOUT, ClientPool, Inbox, asyncio_test, stanza_text

ROOT = Path(__file__).resolve().parents[2]
SECRET = "integration-component-secret"
STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "component.secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def component_tls() -> bool:
    """Whether the component port speaks direct TLS (parametrize to change)."""
    return False


@pytest.fixture
def server_overrides(secret_file: Path, component_tls: bool) -> dict[str, Any]:
    """Components on the integration server: external ones (echo, slix, desk, far) and an
    in-process help desk."""
    return {"components": {
        "interface": LOOPBACK, "port": free_port(), "tls": component_tls,
        "far": {"external": True, "domain": "far.localhost", "secret": SECRET},
        "echo": {"external": True, "domain": "echo.localhost", "secret_file": str(secret_file)},
        "slixecho": {"external": True, "domain": "slix.localhost", "secret": SECRET},
        "desk": {"external": True, "domain": "desk.localhost", "secret_file": str(secret_file)},
        "helpdesk": {"class": "examples.helpdesk_component:HelpDesk", "domain": "helpdesk.localhost",
                     "agents": ["bob@localhost"]},
    }}


def component_port(server: RunningServer) -> int:
    return server.service.listener("components").port.getHost().port


class ComponentProcess:
    """``python -m tigasepy.components.connector`` in its own OS process."""

    def __init__(self, server: RunningServer, tmp_path: Path, class_path: str, domain: str, secret_file: Path,
                 options: str | None = None, extra: tuple[str, ...] = (), host: str = LOOPBACK) -> None:
        args = [sys.executable, "-m", "tigasepy.components.connector", "--class", class_path,
                "--domain", domain, "--host", host, "--port", str(component_port(server)),
                "--secret-file", str(secret_file), "--max-delay", "1", *extra]
        if options is not None:
            options_file = tmp_path / f"{domain}.toml"
            options_file.write_text(options)
            args += ["--options", str(options_file)]
        self.log = tmp_path / f"{domain}.log"
        self.server = server
        self.domain = domain
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self.log.open("wb"),
                                     stderr=subprocess.STDOUT)

    async def wait_connected(self, timeout: float = 20.0) -> None:
        """Until the server has accepted the component (bounded)."""
        hub = self.server.service.external_components
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not hub.is_connected(self.domain):
            if self.proc.poll() is not None or loop.time() > deadline:
                raise AssertionError(f"component {self.domain} did not connect: {self.log.read_text()[-2000:]}")
            await asyncio.sleep(0.05)

    async def wait_disconnected(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        hub = self.server.service.external_components
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while hub.is_connected(self.domain):
            assert loop.time() < deadline, f"component {self.domain} still connected"
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 10)


@pytest.fixture
def processes():
    started: list[ComponentProcess] = []
    yield started
    for proc in started:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait(10)


def error_condition(stanza: Any) -> str | None:
    error = stanza.xml.find(f"{{{CLIENT}}}error")
    if error is None:
        return None
    for child in error:
        if child.tag.startswith(f"{{{STANZA_ERRORS}}}") and not child.tag.endswith("}text"):
            return child.tag.split("}", 1)[1]
    return None


def body_of(stanza: Any) -> str | None:
    return stanza_text(stanza, f"{{{CLIENT}}}body")


def from_is(jid: str) -> Any:
    return lambda stanza: stanza.xml.get("from") == jid


# -- echo over XEP-0114 ----------------------------------------------------------------------

@asyncio_test(timeout=60)
async def test_echo_component_in_another_process_over_xep_0114(
        clients: ClientPool, xmpp_server: RunningServer, tmp_path: Path, secret_file: Path, processes) -> None:
    """The echo component runs in a separate process (the connector), attached over XEP-0114;
    alice's messages come back; while it is down its domain bounces service-unavailable and
    after a restart it answers again."""
    alice = await clients.login("alice", resource="a")
    # Not connected yet: the domain is held, the message bounces.
    alice.send_message(mto="echo.localhost", mbody="anyone?", mtype="chat")
    bounce = await alice.messages.wait_for(lambda m: m.xml.get("type") == "error", what="bounce")
    assert error_condition(bounce) == "service-unavailable"

    echo = ComponentProcess(xmpp_server, tmp_path, "examples.echo_component:EchoComponent", "echo.localhost",
                            secret_file, options='prefix = "echo: "\n')
    processes.append(echo)
    await echo.wait_connected()
    alice.send_message(mto="echo.localhost", mbody="ping 1", mtype="chat")
    reply = await alice.messages.wait_for(from_is("echo.localhost"), what="echo")
    assert (body_of(reply), reply.xml.get("type"), reply.xml.get("to")) == (
        "echo: ping 1", "chat", alice.boundjid.full)
    version = await alice.plugin["xep_0092"].get_version("echo.localhost", timeout=DEFAULT_TIMEOUT) \
        if "xep_0092" in alice.plugin else None
    if version is None:
        alice.register_plugin("xep_0092")
        version = await alice.plugin["xep_0092"].get_version("echo.localhost", timeout=DEFAULT_TIMEOUT)
    assert version["software_version"]["name"] == "echo"

    await echo.stop()
    await echo.wait_disconnected()
    alice.send_message(mto="echo.localhost", mbody="gone?", mtype="chat")
    bounce = await alice.messages.wait_for(lambda m: m.xml.get("type") == "error", what="bounce")
    assert error_condition(bounce) == "service-unavailable"

    again = ComponentProcess(xmpp_server, tmp_path, "examples.echo_component:EchoComponent", "echo.localhost",
                             secret_file)
    processes.append(again)
    await again.wait_connected()
    alice.send_message(mto="user@echo.localhost", mbody="ping 2", mtype="chat")
    reply = await alice.messages.wait_for(from_is("user@echo.localhost"), what="echo")
    assert body_of(reply) == "ping 2"
    await again.stop()


@asyncio_test
async def test_a_wrong_secret_keeps_the_component_out(xmpp_server: RunningServer, tmp_path: Path,
                                                       processes) -> None:
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not-the-secret\n")
    proc = ComponentProcess(xmpp_server, tmp_path, "examples.echo_component:EchoComponent", "echo.localhost",
                            wrong)
    processes.append(proc)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEFAULT_TIMEOUT
    while "not-authorized" not in proc.log.read_text() and loop.time() < deadline:
        await asyncio.sleep(0.1)
    assert "not-authorized" in proc.log.read_text()
    assert "not-the-secret" not in proc.log.read_text()
    assert not xmpp_server.service.external_components.is_connected("echo.localhost")
    await proc.stop()


@pytest.mark.parametrize("component_tls", [True])
@asyncio_test(timeout=60)
async def test_component_port_with_direct_tls(
        clients: ClientPool, xmpp_server: RunningServer, tmp_path: Path, secret_file: Path, processes) -> None:
    """[components] tls = true: the connector verifies the server's certificate (--ca-file) and
    works as over plain TCP; a plain-text component gets nowhere."""
    echo = ComponentProcess(xmpp_server, tmp_path, "examples.echo_component:EchoComponent", "echo.localhost",
                            secret_file, extra=("--tls", "--ca-file", str(xmpp_server.certificate_path)),
                            host="localhost")
    processes.append(echo)
    await echo.wait_connected()
    alice = await clients.login("alice", resource="a")
    alice.send_message(mto="echo.localhost", mbody="over tls", mtype="chat")
    reply = await alice.messages.wait_for(from_is("echo.localhost"), what="echo")
    assert body_of(reply) == "over tls"
    await echo.stop()
    plain = ComponentProcess(xmpp_server, tmp_path, "examples.echo_component:EchoComponent", "desk.localhost",
                             secret_file)
    processes.append(plain)
    await asyncio.sleep(1.0)
    assert not xmpp_server.service.external_components.is_connected("desk.localhost")
    await plain.stop()


@asyncio_test(timeout=60)
async def test_a_tigasepy_server_runs_a_component_of_another_server_from_its_config(
        clients: ClientPool, xmpp_server: RunningServer, tmp_path: Path) -> None:
    """Server B's config has [components.far] with class and connect = "host:port": B runs the
    echo component as an external component of server A, where alice uses it."""
    from twisted.internet import reactor

    from support.server import start_server
    from support.xmpp_clients import from_deferred

    overrides = {"components": {"far": {
        "class": "examples.echo_component:EchoComponent", "domain": "far.localhost", "prefix": "far: ",
        "connect": f"{LOOPBACK}:{component_port(xmpp_server)}", "secret": SECRET}}}
    other = await from_deferred(start_server((tmp_path / "b").resolve(), reactor, overrides), timeout=30)
    try:
        [connector] = other.service.component_connectors
        await from_deferred(connector.when_ready())
        alice = await clients.login("alice", resource="a")
        alice.send_message(mto="far.localhost", mbody="hello B", mtype="chat")
        reply = await alice.messages.wait_for(from_is("far.localhost"), what="echo from B")
        assert body_of(reply) == "far: hello B"
    finally:
        await from_deferred(other.stop(), timeout=30)
    hub = xmpp_server.service.external_components
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEFAULT_TIMEOUT
    while hub.is_connected("far.localhost") and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert not hub.is_connected("far.localhost")


# -- slixmpp's XEP-0114 component against our accept side -----------------------------------

class SlixComponent(slixmpp.ComponentXMPP):
    """slixmpp's own external component: echoes messages; records stream errors."""

    def __init__(self, jid: str, secret: str, port: int) -> None:
        super().__init__(jid, secret, LOOPBACK, port)
        self.whitespace_keepalive = False
        self.errors = Inbox(f"{jid} stream errors")
        self.started = asyncio.get_running_loop().create_future()
        self.gone = asyncio.get_running_loop().create_future()
        self.add_event_handler("disconnected", lambda _: self.gone.done() or self.gone.set_result(True))
        self.add_event_handler("session_start", lambda _: self.started.done() or self.started.set_result(True))
        self.add_event_handler("stream_error", lambda e: self.errors.put(e["condition"]))
        self.add_event_handler("message", self._echo)

    async def shut(self) -> None:
        """Drop the connection and end slixmpp's background send task (nothing left pending)."""
        self.abort()
        sender = getattr(self, "_run_out_filters", None)
        if sender is not None and not sender.done():
            sender.cancel()
            await asyncio.wait([sender], timeout=DEFAULT_TIMEOUT)

    def _echo(self, msg: Any) -> None:
        if msg["type"] in ("chat", "normal"):
            self.send_message(mto=msg["from"], mfrom=msg["to"], mbody=f"slix: {msg['body']}", mtype="chat")


@asyncio_test
async def test_slixmpp_component_connects_and_is_held_to_its_domain(
        clients: ClientPool, xmpp_server: RunningServer) -> None:
    """An independent XEP-0114 implementation (slixmpp.ComponentXMPP) authenticates, receives
    a user's message and answers; sending from a user of the hosted domain ends its stream
    with invalid-from."""
    alice = await clients.login("alice", resource="a")
    component = SlixComponent("slix.localhost", SECRET, component_port(xmpp_server))
    component.connect()
    try:
        await asyncio.wait_for(component.started, DEFAULT_TIMEOUT)
        alice.send_message(mto="bot@slix.localhost", mbody="hi", mtype="chat")
        reply = await alice.messages.wait_for(from_is("bot@slix.localhost"), what="slixmpp echo")
        assert body_of(reply) == "slix: hi"
        # a component must not speak for the server's users
        component.send_message(mto=alice.boundjid.full, mfrom="bob@localhost", mbody="I am bob")
        assert await component.errors.wait_for(what="stream error") == "invalid-from"
        await asyncio.wait_for(asyncio.shield(component.gone), DEFAULT_TIMEOUT)
        await asyncio.sleep(0.2)
        assert alice.messages.take(lambda m: body_of(m) == "I am bob") is None
    finally:
        await component.shut()


@asyncio_test
async def test_slixmpp_component_with_a_wrong_secret_gets_not_authorized(xmpp_server: RunningServer) -> None:
    component = SlixComponent("slix.localhost", "wrong", component_port(xmpp_server))
    component.connect()
    try:
        assert await component.errors.wait_for(what="stream error") == "not-authorized"
        assert not component.started.done()
    finally:
        await component.shut()


# -- the help desk, in-process and over XEP-0114 --------------------------------------------

async def help_desk_scenario(clients: ClientPool, domain: str) -> None:
    """alice and carol (visitors) queue at support@<domain>; bob (the agent) takes them in turn."""
    desk = f"support@{domain}"
    alice = await clients.login("alice", resource="web")
    carol = await clients.login("carol", resource="web")
    bob = await clients.login("bob", resource="desk")

    alice.send_message(mto=desk, mbody="My order has not arrived", mtype="chat")
    waiting = await alice.messages.wait_for(from_is(desk), what="queue position")
    assert "number 1 in the queue" in body_of(waiting)
    carol.send_message(mto=desk, mbody="How do I reset my password?", mtype="chat")
    waiting = await carol.messages.wait_for(from_is(desk), what="queue position")
    assert "number 2 in the queue" in body_of(waiting)

    bob.send_message(mto=desk, mbody="!ready", mtype="chat")
    intro = await bob.messages.wait_for(lambda m: "New visitor alice@localhost" in (body_of(m) or ""),
                                        what="ticket intro")
    ticket = intro.xml.get("from")
    assert ticket.startswith("ticket-") and ticket.endswith("@" + domain)
    first = await bob.messages.wait_for(from_is(ticket), what="alice's first message")
    assert body_of(first) == "My order has not arrived"
    assert body_of(await alice.messages.wait_for(from_is(desk))) == "An agent is with you now."
    assert body_of(await carol.messages.wait_for(from_is(desk))) == "You are now number 1 in the queue."

    bob.send_message(mto=ticket, mbody="Let me check the tracking number.", mtype="chat")
    relayed = await alice.messages.wait_for(from_is(desk), what="the agent's answer")
    assert body_of(relayed) == "Let me check the tracking number."
    alice.send_message(mto=desk, mbody="It is 12345", mtype="chat")
    relayed = await bob.messages.wait_for(from_is(ticket), what="alice's answer")
    assert body_of(relayed) == "It is 12345"
    # neither sees the other's JID on relayed messages
    assert relayed.xml.get("from") != alice.boundjid.full

    bob.send_message(mto=desk, mbody="!done", mtype="chat")
    closed = await alice.messages.wait_for(from_is(desk), what="closing message")
    assert "closed this conversation" in body_of(closed)
    intro = await bob.messages.wait_for(lambda m: "New visitor carol@localhost" in (body_of(m) or ""),
                                        what="second ticket")
    second = intro.xml.get("from")
    assert second != ticket
    assert body_of(await bob.messages.wait_for(from_is(second))) == "How do I reset my password?"
    assert body_of(await carol.messages.wait_for(from_is(desk))) == "An agent is with you now."
    carol.send_message(mto=desk, mbody="!bye", mtype="chat")
    assert body_of(await carol.messages.wait_for(from_is(desk))) == "Goodbye!"
    ended = await bob.messages.wait_for(from_is(second), what="ticket closed notice")
    assert "closed" in body_of(ended)


@asyncio_test
async def test_help_desk_in_process(clients: ClientPool) -> None:
    await help_desk_scenario(clients, "helpdesk.localhost")


@asyncio_test(timeout=60)
async def test_help_desk_in_another_process_over_xep_0114(
        clients: ClientPool, xmpp_server: RunningServer, tmp_path: Path, secret_file: Path, processes) -> None:
    proc = ComponentProcess(xmpp_server, tmp_path, "examples.helpdesk_component:HelpDesk", "desk.localhost",
                            secret_file, options='agents = ["bob@localhost"]\n')
    processes.append(proc)
    await proc.wait_connected()
    await help_desk_scenario(clients, "desk.localhost")
    await proc.stop()
