"""slixmpp clients for integration tests, sharing the asyncio loop the Twisted reactor runs on.

- ``asyncio_test``: write a test as ``async def`` over asyncio (slixmpp) and let
  pytest-twisted run it on the reactor's loop, bounded by a timeout.
- ``TestClient``: a ``slixmpp.ClientXMPP`` that trusts the server's generated
  certificate and records what it receives in ``Inbox``es.
- ``ClientPool``: makes clients for one server and disconnects them after the test.

Every wait is bounded (``DEFAULT_TIMEOUT`` seconds unless a call says otherwise).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from pathlib import Path
from typing import Any, Awaitable, Callable, Coroutine, TypeVar
from xml.etree import ElementTree as ET

import pytest_twisted
import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from twisted.internet import defer

from support.server import LOOPBACK, RunningServer

#: Bound of one wait (generous: a passing test never waits this long; a loaded CI machine
#: can be slow to hand out TLS handshakes and PBKDF2 rounds).
DEFAULT_TIMEOUT = 10.0
#: Upper bound for one whole integration test.
TEST_TIMEOUT = 45.0

STREAMS = "http://etherx.jabber.org/streams"
STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
CLIENT = "jabber:client"
ROSTER = "jabber:iq:roster"
DELAY = "urn:xmpp:delay"

T = TypeVar("T")


# -- running asyncio code under pytest-twisted -------------------------------------------

def asyncio_test(fn: Callable[..., Coroutine[Any, Any, Any]] | None = None, *,
                 timeout: float = TEST_TIMEOUT) -> Any:
    """Run an ``async def`` test as an asyncio task on the reactor's event loop.

    pytest-twisted calls the wrapper inside the running reactor and waits for the
    Deferred it returns; the coroutine may await asyncio futures (slixmpp) and, through
    ``from_deferred``, Twisted Deferreds. The whole test is bounded by ``timeout``.
    """

    def decorate(test: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., defer.Deferred]:
        @functools.wraps(test)
        def wrapper(*args: Any, **kwargs: Any) -> defer.Deferred:
            bounded = asyncio.wait_for(test(*args, **kwargs), timeout)
            return defer.Deferred.fromFuture(asyncio.ensure_future(bounded))

        return wrapper

    return decorate(fn) if fn is not None else decorate


async def from_deferred(d: defer.Deferred, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Await a Twisted Deferred from asyncio code (bounded)."""
    return await asyncio.wait_for(d.asFuture(asyncio.get_running_loop()), timeout)


def run_in_reactor(make: Callable[[], Awaitable[T] | defer.Deferred]) -> T:
    """From a (synchronous) fixture: run ``make()`` inside the reactor and block on its result.

    ``make`` may return a coroutine (run as an asyncio task) or a Deferred.
    """
    from twisted.internet import reactor

    result: defer.Deferred = defer.Deferred()

    def start() -> None:
        try:
            value = make()
        except BaseException:
            result.errback()
            return
        if isinstance(value, defer.Deferred):
            value.chainDeferred(result)
        else:
            defer.Deferred.fromFuture(asyncio.ensure_future(value)).chainDeferred(result)

    reactor.callLater(0, start)
    return pytest_twisted.blockon(result)


# -- recording what a client receives ------------------------------------------------------

class Inbox:
    """Items received, in order, with bounded waits for one matching a predicate.

    ``wait_for`` takes (removes) the first matching item, so a test consumes what it checks.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.items: list[Any] = []
        self._waiters: list[asyncio.Future] = []

    def put(self, item: Any) -> None:
        """Record an item and wake the waiters."""
        self.items.append(item)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def take(self, predicate: Callable[[Any], bool]) -> Any | None:
        """Remove and return the first recorded item matching ``predicate`` (None if none)."""
        for index, item in enumerate(self.items):
            if predicate(item):
                del self.items[index]
                return item
        return None

    async def wait_for(self, predicate: Callable[[Any], bool] = lambda _: True, *,
                       timeout: float = DEFAULT_TIMEOUT, what: str = "an item") -> Any:
        """The first item matching ``predicate``, waiting at most ``timeout`` seconds for it.

        Raises:
            AssertionError: nothing matched in time (lists what did arrive).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = self.take(predicate)
            if found is not None:
                return found
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no {what} within {timeout}s; "
                                     f"received meanwhile: {[str(i)[:300] for i in self.items]}")
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                pass


def client_ssl_context(cafile: Path, *, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client context that trusts only the server's generated certificate, hostname checked."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if max_version is not None:
        context.maximum_version = max_version
    return context


class LoginFailed(Exception):
    """The client did not get a session; ``reason`` says why (SASL condition, stream error, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TestClient(slixmpp.ClientXMPP):
    """A slixmpp client recording what it receives.

    Inboxes: ``messages``, ``presences``, ``roster_pushes`` (IQ sets with a roster),
    ``stream_errors`` (stream error conditions), ``stream_features`` (stream features elements,
    as ``xml.etree`` elements), ``sasl_failures`` (SASL failure conditions).

    Automatic roster behaviour (auto-authorize, auto-subscribe) is off, so tests send
    every subscription stanza themselves.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, jid: str, password: str, *, cafile: Path, mechanism: str | None = None,
                 max_tls_version: ssl.TLSVersion | None = None) -> None:
        super().__init__(jid, password, sasl_mech=mechanism,
                         ssl_context=client_ssl_context(cafile, max_version=max_tls_version))
        self.whitespace_keepalive = False
        self.auto_authorize = None
        self.auto_subscribe = False
        self.register_plugin("xep_0199")  # XMPP ping, for round trips
        self.messages = Inbox(f"{jid} messages")
        self.presences = Inbox(f"{jid} presences")
        self.roster_pushes = Inbox(f"{jid} roster pushes")
        self.stream_errors = Inbox(f"{jid} stream errors")
        self.stream_features = Inbox(f"{jid} stream features")
        self.sasl_failures = Inbox(f"{jid} SASL failures")
        self.session_started = False
        self._outcome: asyncio.Future | None = None
        self.register_handler(Callback("test messages", MatchXPath(f"{{{CLIENT}}}message"),
                                       self.messages.put))
        self.register_handler(Callback("test presences", MatchXPath(f"{{{CLIENT}}}presence"),
                                       self.presences.put))
        self.register_handler(Callback("test roster pushes", MatchXPath(f"{{{CLIENT}}}iq/{{{ROSTER}}}query"),
                                       self._maybe_push))
        self.register_handler(Callback("test features", MatchXPath(f"{{{STREAMS}}}features"),
                                       lambda stanza: self.stream_features.put(stanza.xml)))
        self.add_event_handler("stream_error", lambda error: self.stream_errors.put(error["condition"]))
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("failed_auth", self._on_failed_auth)
        self.add_event_handler("failed_all_auth", lambda _: self._finish(LoginFailed("no usable mechanism")))
        self.add_event_handler("disconnected", self._on_disconnected)

    # -- event plumbing -------------------------------------------------------------------
    def _maybe_push(self, iq: Any) -> None:
        if iq["type"] == "set":
            self.roster_pushes.put(iq)

    def _finish(self, outcome: Any) -> None:
        if self._outcome is not None and not self._outcome.done():
            if isinstance(outcome, BaseException):
                self._outcome.set_exception(outcome)
            else:
                self._outcome.set_result(outcome)

    def _on_session_start(self, _event: Any) -> None:
        self.session_started = True
        self._finish(True)

    def _on_failed_auth(self, failure: Any) -> None:
        condition = failure["condition"]
        self.sasl_failures.put(condition)
        self._finish(LoginFailed(f"SASL failure: {condition}"))

    def _on_disconnected(self, reason: Any) -> None:
        self.session_started = False
        self._finish(LoginFailed(f"disconnected before the session started ({reason})"))

    # -- test API -------------------------------------------------------------------------
    @property
    def secure(self) -> bool:
        """True when the stream runs over TLS."""
        return isinstance(self.socket, (ssl.SSLObject, ssl.SSLSocket))

    @property
    def tls_version(self) -> str | None:
        """The negotiated TLS version (``TLSv1.3``), or None without TLS."""
        return self.socket.version() if self.secure else None

    def start_connect(self, port: int, *, direct_tls: bool = False, starttls: bool = True) -> asyncio.Future:
        """Open the connection to 127.0.0.1:``port`` and return the login outcome future.

        The future resolves True at ``session_start`` and fails with ``LoginFailed`` on a
        SASL failure or a disconnection first. ``direct_tls`` speaks TLS from the first
        byte (XEP-0368); ``starttls=False`` stays in plain text.
        """
        self._outcome = asyncio.get_running_loop().create_future()
        self.enable_direct_tls = direct_tls
        self.enable_starttls = not direct_tls and starttls
        self.enable_plaintext = not direct_tls
        self.connect(LOOPBACK, port)
        return self._outcome

    async def login(self, port: int, *, direct_tls: bool = False, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Connect and wait (bounded) for the session to start.

        Raises:
            LoginFailed: SASL failed or the server closed the stream first.
        """
        outcome = self.start_connect(port, direct_tls=direct_tls)
        try:
            await asyncio.wait_for(outcome, timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.requested_jid}: no session within {timeout}s") from None

    async def wait_disconnected(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait (bounded) until the connection is gone."""
        if self.transport is None:
            return
        await asyncio.wait_for(asyncio.shield(self.disconnected), timeout)

    async def ping_server(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """One IQ round trip to the server: everything sent before it was processed."""
        await self.plugin["xep_0199"].send_ping(self.boundjid.domain, timeout=timeout)

    async def close(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Close the stream (waits at most ``timeout`` for the server's reply) and end
        slixmpp's background send task, so that nothing is left pending on the loop."""
        try:
            if self.transport is not None:
                await asyncio.wait_for(self.disconnect(wait=min(2.0, timeout)), timeout)
        finally:
            sender = getattr(self, "_run_out_filters", None)
            if sender is not None and not sender.done():
                sender.cancel()
                await asyncio.wait([sender], timeout=timeout)


def stanza_text(stanza: Any, path: str) -> str | None:
    """The text of the first element at ``path`` (ElementTree syntax) under the stanza."""
    element = stanza.xml.find(path)
    return element.text if element is not None else None


def has_child(stanza: Any, namespace: str, name: str) -> bool:
    """True when the stanza has a direct child ``{namespace}name``."""
    return stanza.xml.find(f"{{{namespace}}}{name}") is not None


def feature_mechanisms(features: ET.Element) -> list[str]:
    """The SASL mechanisms named in a stream features element."""
    return [m.text or "" for m in features.iter("{urn:ietf:params:xml:ns:xmpp-sasl}mechanism")]


class ClientPool:
    """Makes clients for one server and closes whatever is still connected at teardown."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.clients: list[TestClient] = []

    def new(self, user: str, password: str | None = None, *, resource: str | None = None,
            mechanism: str | None = None, max_tls_version: ssl.TLSVersion | None = None) -> TestClient:
        """A client for ``user@localhost`` (password: the one the account was created with)."""
        jid = self.server.jid(user)
        if password is None:
            password = self.server.passwords[jid]
        full = f"{jid}/{resource}" if resource else jid
        client = TestClient(full, password, cafile=self.server.certificate_path, mechanism=mechanism,
                            max_tls_version=max_tls_version)
        self.clients.append(client)
        return client

    async def login(self, user: str, *, resource: str | None = None, direct_tls: bool = False,
                    mechanism: str | None = None, available: bool = False,
                    timeout: float = DEFAULT_TIMEOUT) -> TestClient:
        """A logged-in client; with ``available`` it also sent initial presence."""
        client = self.new(user, resource=resource, mechanism=mechanism)
        port = self.server.direct_tls_port if direct_tls else self.server.c2s_port
        await client.login(port, direct_tls=direct_tls, timeout=timeout)
        if available:
            client.send_presence()
            await client.ping_server()
        return client

    async def close_all(self) -> None:
        """Disconnect every client that is still connected (bounded, errors ignored)."""
        for client in self.clients:
            try:
                client.cancel_connection_attempt()
                await client.close(timeout=2.0)
            except Exception:  # noqa: BLE001 - teardown must go on
                client.abort()


# -- stanza predicates and RFC 6121 helpers shared by the scenarios ---------------------------

def is_chat(body: str) -> Callable[[Any], bool]:
    """Predicate: a message with this body."""
    return lambda stanza: stanza_text(stanza, f"{{{CLIENT}}}body") == body


def is_presence(kind: str | None, sender: str | None = None) -> Callable[[Any], bool]:
    """Predicate: a presence of type ``kind`` (None: available), optionally from ``sender``
    (a bare JID matches any of its resources)."""

    def match(stanza: Any) -> bool:
        if stanza.xml.get("type") != kind:
            return False
        if sender is None:
            return True
        frm = stanza.xml.get("from", "")
        return frm == sender or frm.split("/", 1)[0] == sender

    return match


def roster_items(stanza: Any) -> dict[str, dict[str, str | None]]:
    """jid -> {subscription, ask, name} of the items in a roster result or push."""
    items = {}
    for item in stanza.xml.iter(f"{{{ROSTER}}}item"):
        items[item.get("jid")] = {"subscription": item.get("subscription"), "ask": item.get("ask"),
                                  "name": item.get("name")}
    return items


def is_push_for(jid: str, **expected: str | None) -> Callable[[Any], bool]:
    """Predicate: a roster push carrying ``jid`` with the given attribute values."""

    def match(stanza: Any) -> bool:
        item = roster_items(stanza).get(jid)
        return item is not None and all(item.get(k) == v for k, v in expected.items())

    return match


async def fetch_roster(client: TestClient) -> dict[str, dict[str, str | None]]:
    """The roster as the server holds it now (also makes the resource interested in pushes).

    Asks without a cached version: with roster versioning (XEP-0237) slixmpp's own
    ``get_roster`` sends the version it last saw and may rightly get an empty result.
    """
    iq = client.Iq()
    iq["type"] = "get"
    iq.enable("roster")
    result = await iq.send(timeout=DEFAULT_TIMEOUT)
    client.event("roster_update", result)
    return roster_items(result)


async def online(pool: ClientPool, user: str, resource: str) -> TestClient:
    """Logged in, roster fetched (interested in pushes), initial presence sent and echoed."""
    client = await pool.login(user, resource=resource)
    await fetch_roster(client)
    client.send_presence()
    await client.presences.wait_for(is_presence(None, client.boundjid.full), what="own presence echo")
    return client


async def befriend(first: TestClient, second: TestClient) -> None:
    """Mutual subscription between two online clients, each approving the other's request;
    returns once both rosters show 'both'."""
    a, b = first.boundjid.bare, second.boundjid.bare
    first.send_presence(pto=b, ptype="subscribe")
    await second.presences.wait_for(is_presence("subscribe", a), what="subscribe request")
    second.send_presence(pto=a, ptype="subscribed")
    second.send_presence(pto=a, ptype="subscribe")
    await first.presences.wait_for(is_presence("subscribe", b), what="subscribe request")
    first.send_presence(pto=b, ptype="subscribed")
    await first.roster_pushes.wait_for(is_push_for(b, subscription="both"), what="push: both")
    await second.roster_pushes.wait_for(is_push_for(a, subscription="both"), what="push: both")
