"""The examples in examples/ work: a custom extension, a component, and an embedding .tac file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from zope.interface.verify import verifyClass, verifyObject

from tests.support.sm_harness import SMHarness, condition
from tigasepy.components import configured_components
from tigasepy.interfaces import IComponent, IExtension
from tigasepy.router.router import LocalDelivery, Router
from tigasepy.sm.events import InitialPresence, SessionEvent
from tigasepy.storage.interfaces import IAccountStore, IOfflineStore, IRosterStore
from tigasepy.storage.memory import MemoryAccountStore, MemoryOfflineStore, MemoryRosterStore
from tigasepy.extensions.message import MessageDelivery

from examples.custom_extension import Welcome, WelcomeConfig
from examples.echo_component import EchoComponent

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stores():
    accounts = MemoryAccountStore()
    accounts.create("alice@example.org", [])
    return {IAccountStore: accounts, IRosterStore: MemoryRosterStore(), IOfflineStore: MemoryOfflineStore()}


def test_welcome_extension_greets_once_per_period(stores):
    verifyClass(IExtension, Welcome)
    world = SMHarness([(Welcome, WelcomeConfig(text="hello", every_s=60))], stores)
    alice = world.connect("alice@example.org/a")
    session = world.sm.session("alice@example.org/a")
    world.sm.hooks.notify(InitialPresence, SessionEvent(session))
    world.sm.hooks.notify(InitialPresence, SessionEvent(session))
    [greeting] = alice.take()
    assert (greeting["type"], str(greeting.body)) == ("headline", "hello")
    world.clock.advance(61)
    world.sm.hooks.notify(InitialPresence, SessionEvent(session))
    assert len(alice.take()) == 1


def test_welcome_extension_answers_its_iq(stores):
    world = SMHarness([(Welcome, WelcomeConfig(text="hi there"))], stores)
    alice = world.connect("alice@example.org/a")
    world.send(alice, "<iq type='get' id='w' to='example.org'><query xmlns='urn:example:welcome'/></iq>")
    [reply] = alice.sent
    assert str(reply.firstChildElement().text) == "hi there"


def _routed_world(stores):
    world = SMHarness([(MessageDelivery, None)], stores)
    router = Router()
    world.sm.router = router
    router.add_route("example.org", LocalDelivery("example.org", world.sm))
    [(cls, domain, config)] = configured_components({"echo": {
        "class": "examples.echo_component:EchoComponent", "domain": "echo.example.org", "prefix": "> "}})
    component = cls(domain, config)
    component.attach(router)
    return world, component


def test_echo_component_echoes_messages_back_to_the_sender(stores):
    world, component = _routed_world(stores)
    verifyObject(IComponent, component)
    alice = world.connect("alice@example.org/a")
    world.send(alice, "<message to='echo.example.org' type='chat'><body>ping</body></message>")
    [echo] = alice.sent
    assert (echo["from"], echo["type"], str(echo.body)) == ("echo.example.org", "chat", "> ping")


def test_echo_component_answers_unknown_iqs_with_service_unavailable(stores):
    world, _component = _routed_world(stores)
    alice = world.connect("alice@example.org/a")
    world.send(alice, "<iq type='get' id='x' to='echo.example.org'><q xmlns='urn:nope'/></iq>")
    [reply] = alice.sent
    assert condition(reply) == "service-unavailable"


def test_detached_component_domain_bounces(stores):
    world, component = _routed_world(stores)
    component.detach()
    alice = world.connect("alice@example.org/a")
    world.send(alice, "<message to='echo.example.org' id='m'><body>ping</body></message>")
    [reply] = alice.sent
    assert condition(reply) == "remote-server-not-found"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_embed_tac_runs_a_server_that_answers_on_a_real_socket(tmp_path):
    port = _free_port()
    env = dict(os.environ, TIGASEPY_EXAMPLE_PORT=str(port), TIGASEPY_EXAMPLE_DATA=str(tmp_path / "data"),
               PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
         "--logfile", str(tmp_path / "twistd.log"), "-y", str(ROOT / "examples" / "embed.tac")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        data = b""
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    sock.sendall(b"<stream:stream xmlns='jabber:client' "
                                 b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")
                    while b"</stream:features>" not in data and time.monotonic() < deadline:
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.2)
        assert b"from='localhost'" in data, (tmp_path / "twistd.log").read_text(errors="replace")[-3000:]
        assert b"urn:ietf:params:xml:ns:xmpp-tls" in data
    finally:
        proc.terminate()
        proc.wait(timeout=15)
