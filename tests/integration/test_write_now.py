"""Client connections send at once when nothing is queued (``tigasepy.stream.tcp``), over
real sockets: the c2s listeners use it, and a write larger than the socket takes still
arrives whole and in order."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from twisted.internet import defer, protocol, reactor

from support.server import LOOPBACK, RunningServer
from support.xmpp_clients import ClientPool, asyncio_test
from tigasepy.stream.tcp import WriteNowEndpoint, WriteNowServer, supports_write_now


@asyncio_test
async def test_both_client_listeners_accept_write_now_connections(
        xmpp_server: RunningServer, clients: ClientPool) -> None:
    """STARTTLS and direct-TLS sessions sit on connections that send at once."""
    assert supports_write_now(reactor)
    await clients.login("alice", resource="starttls")
    await clients.login("carol", resource="direct", direct_tls=True)
    streams = {s.resource: s.handle for s in xmpp_server.service.sm.all_sessions()}
    assert isinstance(streams["starttls"].transport, WriteNowServer)
    assert isinstance(streams["direct"].transport.transport, WriteNowServer)   # under TLSMemoryBIOProtocol


class _Flood(protocol.Protocol):
    """Writes far more than a socket buffer holds, then a little more, at once."""

    def connectionMade(self) -> None:
        for n in range(64):
            self.transport.write(bytes([n]) * 65536)     # 4 MiB: the kernel takes part of it
        self.transport.write(b"END")
        self.transport.loseConnection()


def _read_all(port: int) -> bytes:
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        chunks = []
        while True:
            data = sock.recv(1 << 20)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


@asyncio_test
async def test_a_write_larger_than_the_socket_takes_arrives_whole_and_in_order() -> None:
    """What the kernel does not take at once is queued and follows in order; closing after
    the writes still delivers everything."""
    factory = protocol.Factory.forProtocol(_Flood)
    port: Any = await WriteNowEndpoint(reactor, 0, interface=LOOPBACK).listen(factory).asFuture(
        asyncio.get_running_loop())
    try:
        received = await asyncio.to_thread(_read_all, port.getHost().port)
    finally:
        await defer.maybeDeferred(port.stopListening).asFuture(asyncio.get_running_loop())
    expected = b"".join(bytes([n]) * 65536 for n in range(64)) + b"END"
    assert len(received) == len(expected) and received == expected
