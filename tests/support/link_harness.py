"""A split deployment in memory: a session manager and connection managers joined by
``LinkProtocol`` connections over ``twisted.test.iosim``, one ``task.Clock`` for all.

- ``LinkWorld``: the SM side (a real ``SessionManager`` with memory stores and a PLAIN
  authenticator) and any number of ``ConnectionManager``s, each with its own
  ``RemoteSessionManager`` and c2s factory; ``connect``/``cut`` the link of one.
- ``ConnectionManager.client()``: a ``C2SHarness``-like client stream of that process
  on a ``StringTransport``.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.words.xish import domish

from support.c2s_harness import HEADER, ClientView, FakeAuth, TLSStringTransport
from support.sm_harness import SMHarness
from tigasepy.c2s.stream_management import ResumptionRegistry
from tigasepy.config import C2SConfig, LinkConfig, StreamManagementConfig, config_from_dict
from tigasepy.extensions.message import MessageDelivery
from tigasepy.extensions.offline import OfflineMessages
from tigasepy.extensions.ping import Ping
from tigasepy.extensions.session import LegacySession
from tigasepy.interfaces import ChannelBinding
from tigasepy.router.link import LinkSettings
from tigasepy.router.link_cm import LinkedClientStreamFactory, LinkListenerFactory, RemoteSessionManager
from tigasepy.router.link_sm import ConnectionManagerPeer
from tigasepy.storage.interfaces import IAccountStore, IOfflineStore, IRosterStore
from tigasepy.storage.memory import MemoryAccountStore, MemoryOfflineStore, MemoryRosterStore
from tigasepy.xmpp import namespaces as ns

SECRET = b"a-test-secret-of-enough-length"
LINK = LinkConfig(listen="127.0.0.1:5347", grace_period_s=30, request_timeout_s=10, reconnect_min_s=1.0,
                  reconnect_max_s=8.0, keepalive_s=15)
USERS = {"alice": "secret", "bob": "secret", "carol": "secret"}


def settings(secret: bytes = SECRET, binding: bytes = b"channel", link: LinkConfig = LINK,
             fingerprint: str | None = None) -> LinkSettings:
    """Link settings with a stub channel binding (no TLS in memory)."""
    return LinkSettings(link, secret, binding=lambda transport, server: binding,
                        fingerprint=lambda transport: fingerprint)


class LinkClient:
    """One client stream of a connection-manager process, on a StringTransport."""

    def __init__(self, cm: "ConnectionManager") -> None:
        self.cm = cm
        self.view = ClientView()
        self.stream = cm.factory.buildProtocol(None)
        self.transport = TLSStringTransport()
        self.stream.makeConnection(self.transport)

    def receive(self, data: str) -> None:
        """The client sends ``data``."""
        self.stream.dataReceived(data.encode())

    def output(self) -> list[domish.Element]:
        """What the server wrote since the last call, parsed."""
        data = self.transport.value()
        self.transport.clear()
        before = len(self.view.elements)
        self.view.feed(data)
        return self.view.elements[before:]

    def stream_error(self) -> str | None:
        """The stream error condition received, if any (reads pending output first)."""
        self.output()
        for element in self.view.elements:
            if element.uri == ns.STREAMS and element.name == "error":
                for child in element.elements(ns.STREAM_ERRORS):
                    if child.name != "text":
                        return child.name
        return None

    def start_auth(self, user: str, password: str) -> None:
        """Open the stream and send a PLAIN auth (the answer needs the link)."""
        self.receive(HEADER)
        self.output()
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.receive(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{token}</auth>")

    def login(self, world: "LinkWorld", user: str = "alice", resource: str = "home",
              password: str | None = None) -> str:
        """Authenticate and bind through the link; returns the full JID."""
        self.start_auth(user, password or USERS[user])
        world.settle()
        [success] = self.output()
        assert success.name == "success", success.toXml()
        self.view.restart()
        self.receive(HEADER)
        self.output()
        self.receive(f"<iq type='set' id='bind1'><bind xmlns='{ns.BIND}'><resource>{resource}</resource>"
                     "</bind></iq>")
        world.settle()
        [result] = self.output()
        assert result["type"] == "result", result.toXml()
        return str(next(result.elements(ns.BIND, "bind")).jid)

    def messages(self) -> list[domish.Element]:
        """The messages among the new output."""
        return [e for e in self.output() if e.name == "message"]


class ConnectionManager:
    """A connection-manager process: the link end and a c2s factory."""

    def __init__(self, world: "LinkWorld", name: str, link_settings: LinkSettings,
                 c2s: C2SConfig) -> None:
        self.world = world
        self.name = name
        self.settings = link_settings
        config = config_from_dict({"server": {"domains": ["example.org"], "roles": ["c2s"]},
                                   "link": {"listen": "127.0.0.1:5347"}})
        config = replace(config, link=link_settings.config, c2s=c2s)
        self.remote = RemoteSessionManager(config, world.clock)
        self.resumption = ResumptionRegistry(self.remote, world.clock, c2s.stream_management)
        self.remote.resumption = self.resumption
        self.factory = LinkedClientStreamFactory(
            c2s, self.remote, self.remote.auth, world.clock, None, lambda transport: ChannelBinding({}),
            "example.org", connections=self.remote.connections, resumption=self.resumption,
            handed_over=self.remote.handed_over, link=self.remote)
        self.listener = LinkListenerFactory(self.remote, link_settings)
        self.pump: iosim.IOPump | None = None
        self.refuse = False

    def accept(self, dial_factory: Any) -> defer.Deferred:
        """The SM dials this process: connect the two protocols in memory."""
        if self.refuse:
            return defer.fail(ConnectionRefusedError("refused"))
        client = dial_factory.buildProtocol(None)
        server = self.listener.buildProtocol(None)
        self.pump = iosim.connect(server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client),
                                  greet=False, clock=self.world.clock)
        self.client_protocol, self.server_protocol = client, server
        return defer.succeed(client)

    def cut(self) -> None:
        """The link's TCP connection breaks (both ends see it)."""
        if self.pump is not None:
            self.pump.clientIO.loseConnection()
            self.pump.flush(advanceClock=False)
            self.pump = None

    def client(self) -> LinkClient:
        """A new client connection to this process."""
        return LinkClient(self)


class LinkWorld:
    """The session manager and its connection managers."""

    def __init__(self, sm_settings: LinkSettings | None = None, c2s: C2SConfig | None = None) -> None:
        self.clock = Clock()
        accounts = MemoryAccountStore()
        for user in USERS:
            accounts.create(f"{user}@example.org", [])
        self.offline = MemoryOfflineStore()
        stores = {IAccountStore: accounts, IRosterStore: MemoryRosterStore(), IOfflineStore: self.offline}
        self.harness = SMHarness([(Ping, None), (LegacySession, None), (MessageDelivery, None),
                                  (OfflineMessages, None)], stores)
        self.harness.clock = self.clock
        self.sm = self.harness.sm
        self.sm.clock = self.clock
        self.auth = FakeAuth(dict(USERS))
        self.sm_settings = sm_settings or settings()
        self.c2s = c2s or replace(C2SConfig(), tls_required=False, stream_management=StreamManagementConfig(
            resume_timeout_s=60, ack_request_every_stanzas=1000, ack_request_every_s=600, ack_timeout_s=0))
        self.cms: dict[str, ConnectionManager] = {}
        self.peers: dict[str, ConnectionManagerPeer] = {}

    def add_cm(self, name: str = "cm1", link_settings: LinkSettings | None = None) -> ConnectionManager:
        """A connection manager the SM dials (not connected yet: ``start``)."""
        cm = ConnectionManager(self, name, link_settings or settings(), self.c2s)
        self.cms[name] = cm
        self.peers[name] = ConnectionManagerPeer(name, self.sm, self.auth, self.sm_settings.config, self.clock,
                                                 self.sm_settings, lambda f, name=name: self.cms[name].accept(f),
                                                 ("example.org",))
        return cm

    def restart_cm(self, name: str) -> ConnectionManager:
        """The connection-manager process is replaced by a fresh one (its state is gone)."""
        old = self.cms[name]
        if old.pump is not None:
            old.cut()
        cm = ConnectionManager(self, name, old.settings, self.c2s)
        self.cms[name] = cm
        return cm

    def start(self, name: str = "cm1") -> None:
        """The SM starts dialing ``name``; the handshake runs."""
        self.peers[name].start()
        self.settle()

    def settle(self, rounds: int = 20) -> None:
        """Move bytes and let short timers (acks, settles) run until nothing moves."""
        for _ in range(rounds):
            moved = False
            for cm in self.cms.values():
                if cm.pump is not None:
                    moved = cm.pump.pump(advanceClock=False) or moved
            self.clock.advance(0.05)
            if not moved:
                for cm in self.cms.values():
                    if cm.pump is not None and (cm.pump.clientIO.stream or cm.pump.serverIO.stream):
                        moved = True
                if not moved:
                    return

    def advance(self, seconds: float) -> None:
        """Let time pass (reconnections, grace periods, timeouts), moving bytes as it goes."""
        steps = max(1, int(seconds / 0.5))
        for _ in range(steps):
            self.clock.advance(seconds / steps)
            self.settle()
