"""A small blocking XMPP client over raw sockets, for what slixmpp cannot send.

Malformed XML, oversized stanzas, plain-text SASL attempts and SCRAM ``-PLUS`` with
channel-binding data we choose. TLS is pyOpenSSL over memory BIOs, so the client can
read ``tls-unique`` (TLS 1.2) and ``tls-exporter`` (TLS 1.3) binding data, which
Python's ``ssl`` cannot export.

Blocking by design: integration tests run it in a worker thread
(``asyncio.to_thread``) while the server keeps running on the event loop. Every socket
read has a timeout (``timeout`` seconds), so nothing waits forever.
"""

from __future__ import annotations

import base64
import socket
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from cryptography.hazmat.primitives import hashes, serialization
from OpenSSL import SSL

from tigasepy.auth.scram import ScramClient

STREAMS = "http://etherx.jabber.org/streams"
STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
CLIENT = "jabber:client"
EXPORTER_LABEL = b"EXPORTER-Channel-Binding"


class StreamClosed(Exception):
    """The server ended the stream or the connection; ``error`` is the stream error condition."""

    def __init__(self, error: str | None, detail: str = "") -> None:
        super().__init__(error or "closed without a stream error", detail)
        self.error = error


def tag(namespace: str, name: str) -> str:
    """ElementTree's ``{namespace}name``."""
    return f"{{{namespace}}}{name}"


def stream_error_condition(element: ET.Element) -> str | None:
    """The defined condition of a ``<stream:error/>``."""
    for child in element:
        if child.tag.startswith(f"{{{STREAM_ERRORS}}}") and not child.tag.endswith("}text"):
            return child.tag.split("}", 1)[1]
    return None


class RawXmppClient:
    """One client connection to 127.0.0.1; speaks just enough XMPP by hand.

    Typical use: ``open()`` (stream header + features), ``starttls()``, ``auth_plain(...)``
    or ``auth_scram(...)``, ``bind(...)``, then ``send(...)`` / ``read_element()``.
    """

    def __init__(self, port: int, *, domain: str = "localhost", cafile: Path | None = None,
                 timeout: float = 5.0, direct_tls: bool = False,
                 tls_max_version: int | None = None,
                 alpn: tuple[bytes, ...] = (b"xmpp-client",)) -> None:
        self.domain = domain
        self.alpn = alpn
        self.cafile = cafile
        self.timeout = timeout
        self.tls_max_version = tls_max_version
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.tls: SSL.Connection | None = None
        self.header: dict[str, str] = {}
        self.features: ET.Element | None = None
        self.jid: str | None = None
        self._new_parser()
        self._ready: list[ET.Element] = []
        self._closed: StreamClosed | None = None
        if direct_tls:
            self._handshake()

    # -- transport ------------------------------------------------------------------------
    def _flush_tls(self) -> None:
        assert self.tls is not None
        while True:
            try:
                out = self.tls.bio_read(65536)
            except SSL.WantReadError:
                return
            if not out:
                return
            self.sock.sendall(out)

    def _recv_socket(self) -> bytes:
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return b""

    def send(self, data: bytes | str) -> None:
        """Write raw bytes to the stream."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        if self.tls is None:
            self.sock.sendall(data)
            return
        view = memoryview(data)
        while view:
            sent = self.tls.send(bytes(view[:16384]))
            view = view[sent:]
            self._flush_tls()

    def _recv(self) -> bytes:
        """Some bytes from the stream; b"" at the end of the connection.

        Raises:
            socket.timeout: nothing arrived within ``timeout``.
        """
        if self.tls is None:
            return self._recv_socket()
        while True:
            try:
                return self.tls.recv(65536)
            except SSL.WantReadError:
                self._flush_tls()
                data = self._recv_socket()
                if not data:
                    return b""
                self.tls.bio_write(data)
            except SSL.ZeroReturnError:
                return b""
            except SSL.SysCallError:
                return b""

    def _handshake(self) -> None:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        if self.tls_max_version is not None:
            context.set_max_proto_version(self.tls_max_version)
        if self.cafile is not None:
            context.load_verify_locations(str(self.cafile))
            context.set_verify(SSL.VERIFY_PEER, lambda *args: args[-1] == 1)
        if self.alpn:
            context.set_alpn_protos(list(self.alpn))
        conn = SSL.Connection(context, None)
        conn.set_tlsext_host_name(self.domain.encode("ascii"))
        conn.set_connect_state()
        self.tls = conn
        while True:
            try:
                conn.do_handshake()
                break
            except SSL.WantReadError:
                self._flush_tls()
                data = self._recv_socket()
                if not data:
                    raise StreamClosed(None, "connection closed during the TLS handshake")
                conn.bio_write(data)
        self._flush_tls()

    @property
    def tls_version(self) -> str | None:
        """``TLSv1.2``/``TLSv1.3`` once TLS is up."""
        return self.tls.get_protocol_version_name() if self.tls is not None else None

    def channel_binding(self, kind: str) -> bytes:
        """The client's view of the channel-binding data of type ``kind`` (RFC 5929, RFC 9266)."""
        assert self.tls is not None, "no TLS yet"
        if kind == "tls-exporter":
            return self.tls.export_keying_material(EXPORTER_LABEL, 32)
        if kind == "tls-unique":
            finished = self.tls.get_finished()  # the client's Finished: first in a full handshake
            assert finished, "no Finished message"
            return finished
        if kind == "tls-server-end-point":
            certificate = self.tls.get_peer_certificate(as_cryptography=True)
            algorithm = certificate.signature_hash_algorithm
            if isinstance(algorithm, (hashes.MD5, hashes.SHA1)):
                algorithm = hashes.SHA256()
            digest = hashes.Hash(algorithm)
            digest.update(certificate.public_bytes(serialization.Encoding.DER))
            return digest.finalize()
        raise ValueError(kind)

    def close(self) -> None:
        """Drop the connection (no closing handshake)."""
        try:
            self.sock.close()
        except OSError:
            pass

    # -- XML ------------------------------------------------------------------------------
    def _new_parser(self) -> None:
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0

    def _pump(self) -> None:
        """Read once from the socket and parse; raises StreamClosed at the end."""
        data = self._recv()
        if not data:
            self._closed = self._closed or StreamClosed(None, "connection closed")
            raise self._closed
        self._parser.feed(data)
        for event, element in self._parser.read_events():
            if event == "start":
                self._depth += 1
                if self._depth == 1:
                    self.header = dict(element.attrib)
            else:
                self._depth -= 1
                if self._depth == 1:
                    self._ready.append(element)
                elif self._depth == 0:
                    self._ready.append(element)  # the stream's end: a marker for read_element

    def read_element(self) -> ET.Element:
        """The next top-level element the server sent.

        Raises:
            StreamClosed: the stream ended (with the stream error's condition, if one came).
            socket.timeout: nothing arrived in time.
        """
        while not self._ready:
            if self._closed is not None:
                raise self._closed
            self._pump()
        element = self._ready.pop(0)
        if element.tag == tag(STREAMS, "stream"):
            self._closed = StreamClosed(None, "stream closed by the server")
            raise self._closed
        if element.tag == tag(STREAMS, "error"):
            self._closed = StreamClosed(stream_error_condition(element), ET.tostring(element, "unicode"))
            raise self._closed
        return element

    def expect(self, name: str, namespace: str = CLIENT) -> ET.Element:
        """The next element, which must be ``{namespace}name``."""
        element = self.read_element()
        assert element.tag == tag(namespace, name), ET.tostring(element, "unicode")
        return element

    def read_until_closed(self) -> StreamClosed:
        """Read (and discard) until the server ends the stream; returns how it ended.

        Raises:
            socket.timeout: the server kept the stream open.
        """
        while True:
            try:
                self.read_element()
            except StreamClosed as closed:
                return closed

    def wait_connection_closed(self) -> None:
        """After the stream ended: wait until the server also drops the TCP connection."""
        while self._recv():
            pass

    def open(self) -> ET.Element:
        """Send a stream header; returns the server's stream features."""
        self._new_parser()
        self._ready.clear()
        self.send(f"<?xml version='1.0'?><stream:stream xmlns='{CLIENT}' xmlns:stream='{STREAMS}' "
                  f"to='{self.domain}' version='1.0'>")
        self.features = self.expect("features", STREAMS)
        return self.features

    def mechanisms(self) -> list[str]:
        """The SASL mechanisms in the last stream features."""
        assert self.features is not None
        return [m.text or "" for m in self.features.iter(tag(SASL_NS, "mechanism"))]

    def channel_binding_types(self) -> list[str]:
        """The XEP-0440 channel-binding types in the last stream features."""
        assert self.features is not None
        return [e.get("type", "") for e in self.features.iter("{urn:xmpp:sasl-cb:0}channel-binding")]

    # -- negotiation ----------------------------------------------------------------------
    def starttls(self) -> ET.Element:
        """STARTTLS (RFC 6120 5) then a new stream; returns the new features."""
        self.send(f"<starttls xmlns='{TLS_NS}'/>")
        self.expect("proceed", TLS_NS)
        self._handshake()
        return self.open()

    def _sasl_result(self) -> ET.Element:
        element = self.read_element()
        assert element.tag in (tag(SASL_NS, "success"), tag(SASL_NS, "failure"),
                               tag(SASL_NS, "challenge")), ET.tostring(element, "unicode")
        return element

    def auth(self, mechanism: str, initial: bytes | None) -> ET.Element:
        """Send ``<auth/>``; returns the server's challenge, success or failure element."""
        payload = "" if initial is None else (base64.b64encode(initial).decode() or "=")
        self.send(f"<auth xmlns='{SASL_NS}' mechanism='{mechanism}'>{payload}</auth>")
        return self._sasl_result()

    def auth_plain(self, user: str, password: str) -> ET.Element:
        """SASL PLAIN; returns ``<success/>`` or ``<failure/>`` (after success, restarts the stream)."""
        result = self.auth("PLAIN", f"\0{user}\0{password}".encode("utf-8"))
        if result.tag == tag(SASL_NS, "success"):
            self.open()
        return result

    def auth_scram(self, mechanism: str, user: str, password: str,
                   channel_binding: tuple[str, bytes] | None = None) -> ET.Element:
        """A SCRAM exchange with ``tigasepy.auth.scram.ScramClient``.

        Returns ``<success/>`` (server signature verified, stream restarted) or the
        ``<failure/>`` element.
        """
        scram = ScramClient(mechanism, user, password, channel_binding=channel_binding)
        challenge = self.auth(mechanism, scram.first())
        if challenge.tag != tag(SASL_NS, "challenge"):
            return challenge
        final = scram.final(base64.b64decode(challenge.text or ""))
        self.send(f"<response xmlns='{SASL_NS}'>{base64.b64encode(final).decode()}</response>")
        result = self._sasl_result()
        if result.tag == tag(SASL_NS, "success"):
            scram.verify_server(base64.b64decode(result.text or ""))
            self.open()
        return result

    def bind(self, resource: str) -> str:
        """Bind ``resource``; returns the full JID."""
        self.send(f"<iq type='set' id='bind-1'><bind xmlns='{BIND_NS}'><resource>{resource}</resource>"
                  "</bind></iq>")
        reply = self.expect("iq")
        assert reply.get("type") == "result", ET.tostring(reply, "unicode")
        jid = reply.find(f"{tag(BIND_NS, 'bind')}/{tag(BIND_NS, 'jid')}")
        assert jid is not None and jid.text
        self.jid = jid.text
        return jid.text

    def login(self, user: str, password: str, resource: str = "raw") -> str:
        """Header, STARTTLS, SASL PLAIN over TLS and bind in one go; returns the full JID."""
        self.open()
        if self.tls is None:
            self.starttls()
        result = self.auth_plain(user, password)
        assert result.tag == tag(SASL_NS, "success"), ET.tostring(result, "unicode")
        return self.bind(resource)

    def ping(self, iq_id: str = "ping-1") -> ET.Element:
        """A ping to the server; returns the reply IQ (skipping anything else that arrives)."""
        self.send(f"<iq type='get' id='{iq_id}' to='{self.domain}'><ping xmlns='urn:xmpp:ping'/></iq>")
        while True:
            element = self.read_element()
            if element.tag == tag(CLIENT, "iq") and element.get("id") == iq_id:
                return element


def as_text(element: Any) -> str:
    """An element as XML text (for assertion messages)."""
    return ET.tostring(element, "unicode")
