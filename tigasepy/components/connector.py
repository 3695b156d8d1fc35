"""tigasepy as an external component: run a ``Component`` over XEP-0114 against any server.

The component class is the same one that runs in-process (``tigasepy.components.base``):
``ComponentConnector`` attaches it to a ``StreamRouter`` instead of the server's router,
so ``component.send(stanza)`` goes up the XEP-0114 stream and every stanza the server
sends down the stream reaches ``component.receive``. The connector reconnects with an
exponential back-off (reset once a handshake succeeds); stanzas the component sends
while disconnected wait in a bounded queue.

Run one from the command line::

    python -m tigasepy.components.connector --class examples.echo_component:EchoComponent \\
        --domain echo.example.org --host 127.0.0.1 --port 5347 --secret-file echo.secret

or from a tigasepy config (``[components.NAME]`` with ``connect = "host:port"``).
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer, endpoints, protocol
from twisted.python.failure import Failure
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.components.external import handshake_digest
from tigasepy.interfaces import IComponent, IRouter
from tigasepy.log_level import Logger
from tigasepy.stream.parser import StreamParseError, StreamParser
from tigasepy.stream.tcp import disable_nagle
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import stream_error
from tigasepy.xmpp.serialize import to_xml


class HandshakeRefused(Exception):
    """The server ended the stream before accepting the component (``condition``)."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(condition, text)
        self.condition = condition
        self.text = text


@implementer(IRouter)
class StreamRouter:
    """The router an externally connected component is attached to: everything it routes
    goes up the XEP-0114 stream; ``add_route`` just records the component."""

    def __init__(self, send: Callable[[domish.Element], None]) -> None:
        self._send = send
        self.routes: dict[str, IComponent] = {}

    def add_route(self, domain: str, destination: IComponent) -> None:
        self.routes[domain.lower()] = destination

    def remove_route(self, domain: str) -> None:
        self.routes.pop(domain.lower(), None)

    def route(self, stanza: domish.Element) -> None:
        self._send(stanza)


class _State:
    HEADER = "header"          # our header sent; waiting for the server's (with the stream id)
    HANDSHAKE = "handshake"    # handshake sent; waiting for <handshake/>
    READY = "ready"
    CLOSED = "closed"


class ComponentClientStream(protocol.Protocol):
    """The component side of one XEP-0114 connection."""

    _log = Logger()

    def __init__(self, connector: "ComponentConnector") -> None:
        self.connector = connector
        self.domain = connector.domain
        self.state = _State.HEADER
        self.stream_id = ""
        self.refusal: HandshakeRefused | None = None
        self._timer: Any = None
        self._keepalive: Any = None
        self.parser = StreamParser(self._stream_started, self._element, self._stream_ended,
                                   max_stanza_bytes=connector.max_stanza_bytes)
        self.parser.content_namespace = ns.COMPONENT

    def connectionMade(self) -> None:
        disable_nagle(self.transport)
        try:
            self.transport.setTcpKeepAlive(1)
        except (AttributeError, OSError):
            pass
        clock = self.connector.clock
        self._timer = clock.callLater(self.connector.handshake_timeout_s, self._handshake_overdue)
        self.transport.write(
            ("<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
             f"xmlns:stream='http://etherx.jabber.org/streams' to='{self.domain}'>").encode("utf-8"))

    def dataReceived(self, data: bytes) -> None:
        if self.state == _State.CLOSED:
            return
        try:
            self.parser.feed(data)
        except StreamParseError as e:
            self.close(e.condition, e.text or None)
        except Exception:
            self._log.failure("unexpected error on the component stream of {domain}", domain=self.domain)
            self.close("internal-server-error")

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.state = _State.CLOSED
        self._cancel_timers()
        self.connector.stream_lost(self, reason)

    def close(self, condition: str | None = None, text: str | None = None) -> None:
        """End the stream (with a stream error when ``condition`` is given)."""
        if self.state == _State.CLOSED:
            return
        if condition is not None:
            error = stream_error(condition, text)
            self.transport.write(error.toXml(prefixes={ns.STREAMS: "stream"}).encode("utf-8"))
        self.transport.write(b"</stream:stream>")
        self.state = _State.CLOSED
        self._cancel_timers()
        self.transport.loseConnection()

    def send(self, stanza: domish.Element) -> None:
        """Write a stanza to the server."""
        self.transport.write(to_xml(stanza, ns.COMPONENT).encode("utf-8"))

    # -- negotiation --------------------------------------------------------------------
    def _stream_started(self, header: dict[str, str]) -> None:
        if header["__name__"] != "stream" or header["__uri__"] != ns.STREAMS \
                or header.get("xmlns") != ns.COMPONENT:
            self.close("invalid-namespace", f"Expected a {ns.COMPONENT} stream")
            return
        self.stream_id = header.get("id", "")
        if not self.stream_id:
            # The server answers with an error before any id (unknown domain): wait for it.
            return
        self.state = _State.HANDSHAKE
        digest = handshake_digest(self.stream_id, self.connector.secret)
        self.transport.write(f"<handshake>{digest}</handshake>".encode("ascii"))

    def _element(self, element: domish.Element) -> None:
        if element.uri == ns.STREAMS and element.name == "error":
            condition, text = _stream_error_condition(element)
            if self.state != _State.READY:
                self.refusal = HandshakeRefused(condition, text)
            self._log.warn("the server ended the stream of component {domain}: {condition} {text}",
                           domain=self.domain, condition=condition, text=text)
            return
        if self.state == _State.HANDSHAKE:
            if element.uri is None and element.name == "handshake":
                self.state = _State.READY
                if self._timer is not None and self._timer.active():
                    self._timer.cancel()
                self._timer = None
                self._schedule_keepalive()
                self.connector.stream_ready(self)
            else:
                self.close("not-authorized", "Expected the handshake answer")
        elif self.state == _State.READY:
            if element.uri is not None or element.name not in ("message", "presence", "iq"):
                self.close("unsupported-stanza-type", f"Unknown top-level element {element.name}")
                return
            self.connector.deliver(element)
        else:
            self.close("not-authorized", "Unexpected element before the stream header")

    def _stream_ended(self) -> None:
        self.close()

    def _handshake_overdue(self) -> None:
        self._timer = None
        if self.state != _State.READY:
            self._log.warn("component {domain}: no handshake answer in time", domain=self.domain)
            self.close("connection-timeout")

    def _schedule_keepalive(self) -> None:
        if self.connector.keepalive_s > 0:
            self._keepalive = self.connector.clock.callLater(self.connector.keepalive_s, self._whitespace)

    def _whitespace(self) -> None:
        self._keepalive = None
        if self.state == _State.READY:
            self.transport.write(b" ")
            self._schedule_keepalive()

    def _cancel_timers(self) -> None:
        for timer in (self._timer, self._keepalive):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._keepalive = None


def _stream_error_condition(element: domish.Element) -> tuple[str, str]:
    condition, text = "undefined-condition", ""
    for child in element.elements(ns.STREAM_ERRORS):
        if child.name == "text":
            text = str(child)
        else:
            condition = child.name
    return condition, text


class _Factory(protocol.Factory):
    noisy = False

    def __init__(self, connector: "ComponentConnector") -> None:
        self.connector = connector

    def buildProtocol(self, addr: Any) -> ComponentClientStream:
        return ComponentClientStream(self.connector)


class ComponentConnector(service.Service):
    """Keeps ``component`` connected to a server's XEP-0114 port.

    Args:
        component: an ``IComponent`` with ``attach(router)``/``detach()`` (a ``Component``);
            its ``domain`` is the one it authenticates for.
        endpoint: a client endpoint to the server's component port.
        secret: the shared secret (never logged).
        clock: the reactor, for timers and back-off.
        initial_delay_s, max_delay_s, factor: the reconnect back-off (with up to 10 % jitter).
        handshake_timeout_s: a connection not accepted by then is dropped and retried.
        keepalive_s: whitespace sent this often on an idle stream (0: never).
        max_queued: stanzas kept while disconnected; beyond it they are dropped (logged).
    """

    _log = Logger()

    def __init__(self, component: Any, endpoint: Any, secret: str, clock: Any, *,
                 initial_delay_s: float = 1.0, max_delay_s: float = 60.0, factor: float = 2.0,
                 handshake_timeout_s: float = 30.0, keepalive_s: float = 60.0, max_queued: int = 1000,
                 max_stanza_bytes: int = 1 << 20, jitter: bool = True) -> None:
        self.component = component
        self.domain = component.domain
        self.endpoint = endpoint
        self.secret = secret
        self.clock = clock
        self.initial_delay_s = initial_delay_s
        self.max_delay_s = max_delay_s
        self.factor = factor
        self.handshake_timeout_s = handshake_timeout_s
        self.keepalive_s = keepalive_s
        self.max_queued = max_queued
        self.max_stanza_bytes = max_stanza_bytes
        self.jitter = jitter
        self.router = StreamRouter(self.send)
        self.stream: ComponentClientStream | None = None
        self.failures = 0
        self.last_refusal: HandshakeRefused | None = None
        self._connecting: defer.Deferred | None = None
        self._retry: Any = None
        self._queue: collections.deque[domish.Element] = collections.deque()
        self._ready_waiters: list[defer.Deferred] = []
        self._lost_waiters: list[defer.Deferred] = []
        self._pending: ComponentClientStream | None = None
        self.setName(f"component {self.domain}")

    # -- service ------------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        self.component.attach(self.router)
        self._connect()

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._connecting is not None:
            self._connecting.cancel()
        self.component.detach()
        stream = self.stream or self._pending
        if stream is None or stream.state == _State.CLOSED:
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred()
        self._lost_waiters.append(waiter)
        stream.close()
        timeout = self.clock.callLater(5, lambda: stream.transport.abortConnection())
        waiter.addBoth(lambda r: (timeout.cancel() if timeout.active() else None, r)[1])
        return waiter

    @property
    def connected(self) -> bool:
        """True while the handshake succeeded and the stream is up."""
        return self.stream is not None

    def when_ready(self) -> defer.Deferred:
        """Fires once the component is (or when it next gets) connected and accepted."""
        if self.stream is not None:
            return defer.succeed(self)
        waiter: defer.Deferred = defer.Deferred()
        self._ready_waiters.append(waiter)
        return waiter

    # -- connecting ---------------------------------------------------------------------
    def _connect(self) -> None:
        self._retry = None
        if not self.running:
            return
        d = self.endpoint.connect(_Factory(self))
        self._connecting = d
        d.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, stream: ComponentClientStream) -> None:
        self._connecting = None
        self._pending = stream

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        if failure.check(defer.CancelledError) or not self.running:
            return
        self._log.info("component {domain}: cannot connect ({error})", domain=self.domain,
                       error=failure.getErrorMessage())
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        if not self.running or self._retry is not None:
            return
        delay = min(self.max_delay_s, self.initial_delay_s * self.factor ** self.failures)
        if self.jitter:
            delay *= 1 + random.random() * 0.1
        self.failures += 1
        self._log.info("component {domain}: reconnecting in {delay:.1f}s", domain=self.domain, delay=delay)
        self._retry = self.clock.callLater(delay, self._connect)

    def stream_ready(self, stream: ComponentClientStream) -> None:
        """The server accepted the handshake."""
        self._pending = None
        self.stream = stream
        self.failures = 0
        self.last_refusal = None
        self._log.info("component {domain} connected and accepted", domain=self.domain)
        while self._queue and self.stream is stream and stream.state == _State.READY:
            stream.send(self._queue.popleft())
        waiters, self._ready_waiters = self._ready_waiters, []
        for waiter in waiters:
            waiter.callback(self)

    def stream_lost(self, stream: ComponentClientStream, reason: Failure) -> None:
        """A connection ended (refused, dropped or closed)."""
        if self._pending is stream:
            self._pending = None
        if stream.refusal is not None:
            self.last_refusal = stream.refusal
            if stream.refusal.condition in ("not-authorized", "host-unknown"):
                self._log.error("component {domain}: the server refused it ({condition}); check the "
                                "domain and the secret", domain=self.domain, condition=stream.refusal.condition)
        if self.stream is stream:
            self.stream = None
            self._log.info("component {domain}: connection lost", domain=self.domain)
        waiters, self._lost_waiters = self._lost_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        self._schedule_retry()

    # -- stanzas ------------------------------------------------------------------------
    def send(self, stanza: domish.Element) -> None:
        """Send a stanza from the component (queued while disconnected)."""
        if self.stream is not None and self.stream.state == _State.READY:
            self.stream.send(stanza)
            return
        if len(self._queue) >= self.max_queued:
            self._log.warn("component {domain}: disconnected and {count} stanzas queued; dropping a {kind}",
                           domain=self.domain, count=len(self._queue), kind=stanza.name)
            return
        self._queue.append(stanza)

    def deliver(self, stanza: domish.Element) -> None:
        """A stanza from the server for the component."""
        self.component.receive(stanza)


# -- command line -----------------------------------------------------------------------------

def _client_endpoint(reactor: Any, host: str, port: int, tls: bool, ca_file: str) -> Any:
    if not tls:
        return endpoints.HostnameEndpoint(reactor, host, port)
    from twisted.internet import ssl

    trust = None
    if ca_file:
        trust = ssl.Certificate.loadPEM(Path(ca_file).read_bytes())
    options = ssl.optionsForClientTLS(host, trustRoot=trust)
    return endpoints.wrapClientTLS(options, endpoints.HostnameEndpoint(reactor, host, port))


def build_connector(reactor: Any, cls: type, domain: str, config: Any, host: str, port: int, secret: str,
                    tls: bool = False, ca_file: str = "", **options: Any) -> ComponentConnector:
    """A ``ComponentConnector`` running ``cls(domain, config)`` against ``host:port``."""
    component = cls(domain, config)
    endpoint = _client_endpoint(reactor, host, port, tls, ca_file)
    return ComponentConnector(component, endpoint, secret, reactor, **options)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tigasepy.components.connector",
        description="Run a tigasepy component class as an external component (XEP-0114) of a server.")
    parser.add_argument("--class", dest="class_path", required=True, help="package.module:Class")
    parser.add_argument("--domain", required=True, help="the component's domain")
    parser.add_argument("--host", default="127.0.0.1", help="the server's address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5347, help="the server's component port (default 5347)")
    parser.add_argument("--secret-file", required=True,
                        help="file whose first line is the shared secret (never on the command line)")
    parser.add_argument("--options", help="TOML file with the component's own options (its config_type)")
    parser.add_argument("--tls", action="store_true", help="direct TLS to the component port")
    parser.add_argument("--ca-file", default="", help="a PEM CA certificate to trust for --tls (default: the system's CAs)")
    parser.add_argument("--max-delay", type=float, default=60.0, help="longest reconnect delay in seconds")
    parser.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    return parser.parse_args(argv)


def _load(args: argparse.Namespace) -> tuple[type, Any, str]:
    from tigasepy.components import _component_class, read_secret_file

    raw: dict[str, Any] = {"class": args.class_path}
    if args.options:
        raw.update(tomllib.loads(Path(args.options).read_text(encoding="utf-8")))
    cls, config = _component_class(raw, ("options",))
    secret = read_secret_file(Path(args.secret_file), ("--secret-file",))
    return cls, config, secret


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m tigasepy.components.connector``; runs until SIGINT/SIGTERM."""
    from twisted.internet import task
    from twisted.logger import FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogBeginner
    from twisted.logger import textFileLogObserver

    from tigasepy.config import ConfigError

    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if not args.domain or any(c in args.domain for c in "@/ "):
        print(f"error: --domain {args.domain!r} is not a domain name", file=sys.stderr)
        raise SystemExit(2)
    try:
        cls, config, secret = _load(args)
    except (ConfigError, OSError, tomllib.TOMLDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    level = LogLevel.warn if args.quiet else LogLevel.info
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stdout), [LogLevelFilterPredicate(level)])],
        redirectStandardIO=False)

    def run(reactor: Any) -> defer.Deferred:
        connector = build_connector(reactor, cls, args.domain.lower(), config, args.host, args.port, secret,
                                    tls=args.tls, ca_file=args.ca_file, max_delay_s=args.max_delay)
        connector.startService()
        done: defer.Deferred = defer.Deferred()
        reactor.addSystemEventTrigger("before", "shutdown", connector.stopService)
        return done

    task.react(run)


if __name__ == "__main__":
    # Run the module's own copy (tigasepy.components.connector), not this __main__ one, so
    # that classes and log namespaces are the ones the rest of tigasepy imports.
    from tigasepy.components import connector as _connector

    _connector.main()
