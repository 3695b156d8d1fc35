"""Tests for tigasepy.tls: certificates, server contexts and channel binding.

The channel-binding values are checked over real TLS connections on 127.0.0.1: the
server side is a Twisted listener (direct TLS) or a plain TCP stream upgraded with
``startTLS`` (STARTTLS); the client side is computed independently by Python's ``ssl``
module or a pyOpenSSL client running in a thread.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
import ssl
import stat
import struct
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL
from twisted.internet import defer, protocol, threads
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from tigasepy.config import Config, ConfigError, ServerConfig, TLSConfig
from tigasepy.interfaces import ChannelBinding
from tigasepy.tls import (
    ALPN_XMPP_CLIENT,
    CERTIFICATE_VALIDITY_DAYS,
    channel_binding,
    ensure_certificate,
    generate_self_signed,
    server_context_factory,
)

EXPORTER_LABEL = b"EXPORTER-Channel-Binding"
TIMEOUT_S = 15


def make_config(tmp_path: Path, *domains: str, **tls: str) -> Config:
    """A config for ``domains`` whose data directory is under ``tmp_path``."""
    return Config(
        server=ServerConfig(domains=domains or ("example.org",), data_dir=str(tmp_path / "data")),
        tls=TLSConfig(**tls),
    )


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A generated certificate and key for example.org, shared by the connection tests."""
    folder = tmp_path_factory.mktemp("tls")
    cert_pem, key_pem = generate_self_signed(["example.org"])
    (folder / "cert.pem").write_bytes(cert_pem)
    (folder / "key.pem").write_bytes(key_pem)
    return folder / "cert.pem", folder / "key.pem"


# --- certificate generation ---------------------------------------------------------------

def test_generated_certificate_names_every_domain_and_its_subdomains() -> None:
    """The subjectAltName lists each configured domain and ``*.domain``."""
    cert_pem, _ = generate_self_signed(["example.org", "chat.example.net"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [
        "example.org", "*.example.org", "chat.example.net", "*.chat.example.net",
    ]


def test_generated_certificate_is_ec_p256_sha256_for_ten_years() -> None:
    """Key type, signature hash and validity period are the documented ones."""
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    cert_pem, key_pem = generate_self_signed(["example.org"], now=now)
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert cert.not_valid_after_utc - now == datetime.timedelta(days=CERTIFICATE_VALIDITY_DAYS)
    assert cert.not_valid_before_utc <= now
    assert b"PRIVATE KEY" in key_pem
    assert cert.issuer == cert.subject


def test_generated_certificate_encodes_an_international_domain_as_a_label() -> None:
    """An IDN domain appears in its ASCII (punycode) form."""
    cert_pem, _ = generate_self_signed(["bücher.example"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "xn--bcher-kva.example" in names.get_values_for_type(x509.DNSName)


def test_first_start_generates_certificate_and_private_key_file(tmp_path: Path, log_events: list) -> None:
    """With no certificate configured, one is made in the data directory, key mode 0600, and logged."""
    config = make_config(tmp_path, "example.org", "example.net")
    cert_path, key_path = ensure_certificate(config)

    assert cert_path == tmp_path / "data" / "example.org.crt"
    assert key_path == tmp_path / "data" / "example.org.key"
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "example.net" in names.get_values_for_type(x509.DNSName)
    server_context_factory(cert_path, key_path).getContext()  # the pair matches
    messages = [e for e in log_events if "self-signed" in e.get("log_format", "")]
    assert len(messages) == 1
    assert messages[0]["certificate"] == str(cert_path)
    assert leftover_temp_files(tmp_path / "data") == []


def test_existing_certificate_is_kept(tmp_path: Path, log_events: list) -> None:
    """The second start reuses the generated files instead of making new ones."""
    config = make_config(tmp_path)
    cert_path, key_path = ensure_certificate(config)
    first = cert_path.read_bytes(), key_path.read_bytes()
    log_events.clear()

    assert ensure_certificate(config) == (cert_path, key_path)
    assert (cert_path.read_bytes(), key_path.read_bytes()) == first
    assert not [e for e in log_events if "self-signed" in e.get("log_format", "")]


def test_generated_certificate_is_renewed_when_a_domain_is_added(tmp_path: Path) -> None:
    """A domain added to the config gets into a new self-signed certificate."""
    cert_path, _ = ensure_certificate(make_config(tmp_path, "example.org"))
    ensure_certificate(make_config(tmp_path, "example.org", "added.example"))
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "added.example" in names.get_values_for_type(x509.DNSName)


def test_a_certificate_tigasepy_did_not_generate_is_never_replaced(tmp_path: Path) -> None:
    """An operator's certificate placed at the default path stays, even without all domains."""
    data = tmp_path / "data"
    data.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "example.org")])
    now = datetime.datetime.now(datetime.timezone.utc)
    foreign = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
               .sign(key, hashes.SHA256()))
    pem = foreign.public_bytes(serialization.Encoding.PEM)
    (data / "example.org.crt").write_bytes(pem)
    (data / "example.org.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    cert_path, _ = ensure_certificate(make_config(tmp_path, "example.org", "other.example"))
    assert cert_path.read_bytes() == pem


def test_certificate_without_its_key_is_regenerated(tmp_path: Path) -> None:
    """A half-written pair (no key) is replaced by a new, matching pair."""
    config = make_config(tmp_path)
    cert_path, key_path = ensure_certificate(config)
    old = cert_path.read_bytes()
    key_path.unlink()

    assert ensure_certificate(config) == (cert_path, key_path)
    assert cert_path.read_bytes() != old
    server_context_factory(cert_path, key_path).getContext()


def test_configured_certificate_is_used_relative_to_the_config_file(tmp_path: Path, cert_files) -> None:
    """Configured paths are taken as they are, relative ones from the config's folder."""
    cert, key = cert_files
    (tmp_path / "c.pem").write_bytes(cert.read_bytes())
    (tmp_path / "k.pem").write_bytes(key.read_bytes())
    config = Config(
        server=ServerConfig(domains=("example.org",)),
        tls=TLSConfig(certificate="c.pem", private_key="k.pem"),
        source=str(tmp_path / "tigasepy.toml"),
    )
    assert ensure_certificate(config) == (tmp_path / "c.pem", tmp_path / "k.pem")
    assert not (tmp_path / "data").exists()


def test_missing_configured_certificate_is_a_config_error(tmp_path: Path) -> None:
    """A configured file that does not exist names the option."""
    config = make_config(tmp_path, certificate=str(tmp_path / "nope.pem"), private_key=str(tmp_path / "k.pem"))
    with pytest.raises(ConfigError) as caught:
        ensure_certificate(config)
    assert caught.value.path == ("tls", "certificate")


def test_key_that_does_not_match_the_certificate_is_refused(tmp_path: Path, cert_files) -> None:
    """Loading a certificate with someone else's key fails with a config error."""
    cert, _ = cert_files
    _, other_key = generate_self_signed(["example.org"])
    (tmp_path / "other.key").write_bytes(other_key)
    with pytest.raises(ConfigError) as caught:
        server_context_factory(cert, tmp_path / "other.key")
    assert caught.value.path == ("tls", "private_key")


def test_unreadable_certificate_is_a_config_error(tmp_path: Path, cert_files) -> None:
    """A file that is not PEM gives a config error, not a traceback from OpenSSL."""
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError):
        server_context_factory(tmp_path / "junk.pem", cert_files[1])


def leftover_temp_files(folder: Path) -> list[str]:
    """Names of temporary files an interrupted write could have left behind."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# --- channel binding without TLS ----------------------------------------------------------

def test_no_channel_binding_on_a_transport_without_tls() -> None:
    """A transport that is not TLS has no binding data."""
    assert channel_binding(StringTransport()) is None


# --- live connections ---------------------------------------------------------------------

@implementer(IHandshakeListener)
class BindingServer(protocol.Protocol):
    """Server protocol: on ``starttls\\n`` upgrades with ``startTLS``; after the handshake
    records ``channel_binding(transport)`` and the negotiated ALPN, then sends ``k``."""

    def connectionMade(self) -> None:
        self.factory.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        if data == b"starttls\n" and not self.factory.direct:
            self.factory.plain_binding = channel_binding(self.transport)
            self.transport.write(b"proceed\n")
            self.transport.startTLS(self.factory.context)

    def handshakeCompleted(self) -> None:
        result = {
            "binding": channel_binding(self.transport),
            "alpn": self.transport.getHandle().get_alpn_proto_negotiated() or None,
        }
        self.transport.write(b"k")
        if not self.factory.result.called:
            self.factory.result.callback(result)


class BindingFactory(protocol.Factory):
    """Creates ``BindingServer``s; ``result`` fires with the first handshake's data."""

    protocol = BindingServer

    def __init__(self, context: Any, direct: bool) -> None:
        self.context = context
        self.direct = direct
        self.result: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self.connections: list[BindingServer] = []
        self.plain_binding: Any = "unset"


def blocking_socket(port: int) -> socket.socket:
    """A connected, blocking socket whose reads and writes give up after a while."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
    sock.settimeout(None)  # pyOpenSSL needs a blocking socket; bound it in the kernel instead
    limit = struct.pack("ll", TIMEOUT_S, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
    return sock


def starttls_handshake_preamble(sock: socket.socket, starttls: bool) -> None:
    """Ask for STARTTLS over the plain socket when the test is about STARTTLS."""
    if starttls:
        sock.sendall(b"starttls\n")
        assert sock.recv(8) == b"proceed\n"


def python_ssl_client(port: int, starttls: bool, alpn: list[str] | None = None,
                      max_version: ssl.TLSVersion | None = None) -> dict[str, Any]:
    """Connect with Python's ``ssl`` module; return what the client sees."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if max_version is not None:
        context.maximum_version = max_version
    if alpn:
        context.set_alpn_protocols(alpn)
    sock = blocking_socket(port)
    try:
        starttls_handshake_preamble(sock, starttls)
        with context.wrap_socket(sock) as tls:
            seen = {
                "version": tls.version(),
                "tls-unique": tls.get_channel_binding("tls-unique"),
                "peer_der": tls.getpeercert(binary_form=True),
                "alpn": tls.selected_alpn_protocol(),
            }
            assert tls.recv(1) == b"k"
            return seen
    finally:
        sock.close()


def pyopenssl_client(port: int, starttls: bool, version: int) -> dict[str, Any]:
    """Connect with a pyOpenSSL client pinned to ``version``; return what it sees."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(version)
    context.set_max_proto_version(version)
    context.set_verify(SSL.VERIFY_NONE, lambda *args: True)
    sock = blocking_socket(port)
    try:
        starttls_handshake_preamble(sock, starttls)
        conn = SSL.Connection(context, sock)
        conn.set_connect_state()
        conn.do_handshake()
        seen = {
            "version": conn.get_protocol_version_name(),
            "exporter": conn.export_keying_material(EXPORTER_LABEL, 32),
            "finished": conn.get_finished(),
            "peer_der": conn.get_peer_certificate(as_cryptography=True).public_bytes(
                serialization.Encoding.DER),
        }
        assert conn.recv(1) == b"k"
        conn.shutdown()
        return seen
    finally:
        sock.close()


async def run_exchange(cert_files: tuple[Path, Path], direct: bool, client, *args: Any) -> tuple[dict, dict, Any]:
    """Listen on 127.0.0.1 (direct TLS or plain for STARTTLS), run ``client(port, ...)``
    in a thread, and return (server result, client result, factory)."""
    from twisted.internet import reactor

    context = server_context_factory(*cert_files)
    factory = BindingFactory(context, direct)
    if direct:
        listening = reactor.listenSSL(0, factory, context, interface="127.0.0.1")
    else:
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        port = listening.getHost().port
        client_done = threads.deferToThread(client, port, not direct, *args)
        client_done.addTimeout(TIMEOUT_S + 5, reactor)
        server_done = factory.result
        server_done.addTimeout(TIMEOUT_S + 5, reactor)
        server_seen, client_seen = await defer.gatherResults([server_done, client_done], consumeErrors=True)
    finally:
        for conn in factory.connections:
            conn.transport.loseConnection()
        await listening.stopListening()
    return server_seen, client_seen, factory


def sha256(data: bytes) -> bytes:
    """SHA-256 of ``data``."""
    return hashlib.sha256(data).digest()


@pytest.mark.parametrize("direct", [True, False], ids=["direct-tls", "starttls"])
@pytest_twisted.ensureDeferred
async def test_tls13_binding_matches_the_client_exporter_and_certificate(cert_files, direct: bool) -> None:
    """On TLS 1.3: tls-exporter equals the client's RFC 9266 exporter, tls-server-end-point
    the SHA-256 of our certificate as the client received it, and no tls-unique is offered."""
    server, client, _ = await run_exchange(cert_files, direct, pyopenssl_client, SSL.TLS1_3_VERSION)

    binding: ChannelBinding = server["binding"]
    assert client["version"] == "TLSv1.3"
    assert binding.types == {"tls-exporter", "tls-server-end-point"}
    assert binding.data["tls-exporter"] == client["exporter"]
    assert len(client["exporter"]) == 32
    assert binding.data["tls-server-end-point"] == sha256(client["peer_der"])
    our_der = x509.load_pem_x509_certificate(cert_files[0].read_bytes()).public_bytes(
        serialization.Encoding.DER)
    assert binding.data["tls-server-end-point"] == sha256(our_der)


@pytest.mark.parametrize("direct", [True, False], ids=["direct-tls", "starttls"])
@pytest_twisted.ensureDeferred
async def test_tls12_binding_matches_python_ssl_tls_unique(cert_files, direct: bool) -> None:
    """On TLS 1.2: tls-unique equals what Python's ssl reports for the client, and
    tls-server-end-point the certificate hash; no tls-exporter is offered."""
    server, client, _ = await run_exchange(
        cert_files, direct, python_ssl_client, None, ssl.TLSVersion.TLSv1_2)

    binding: ChannelBinding = server["binding"]
    assert client["version"] == "TLSv1.2"
    assert binding.types == {"tls-unique", "tls-server-end-point"}
    assert binding.data["tls-unique"] == client["tls-unique"]
    assert binding.data["tls-server-end-point"] == sha256(client["peer_der"])


@pytest_twisted.ensureDeferred
async def test_tls12_tls_unique_is_the_clients_finished_message(cert_files) -> None:
    """Cross-check with pyOpenSSL: on a full handshake the first Finished is the client's."""
    server, client, _ = await run_exchange(cert_files, True, pyopenssl_client, SSL.TLS1_2_VERSION)
    assert server["binding"].data["tls-unique"] == client["finished"]


@pytest_twisted.ensureDeferred
async def test_no_binding_before_starttls(cert_files) -> None:
    """On the plain TCP stream, before STARTTLS, there is no binding data."""
    _, _, factory = await run_exchange(cert_files, False, python_ssl_client)
    assert factory.plain_binding is None


@pytest.mark.parametrize("alpn, expected", [(None, None), (["xmpp-client"], "xmpp-client"),
                                            (["h2", "xmpp-client"], "xmpp-client")])
@pytest_twisted.ensureDeferred
async def test_direct_tls_negotiates_xmpp_client_alpn(cert_files, alpn, expected) -> None:
    """XEP-0368: a client offering ``xmpp-client`` gets it; one offering no ALPN still connects."""
    server, client, _ = await run_exchange(cert_files, True, python_ssl_client, alpn)
    assert client["alpn"] == expected
    assert server["alpn"] == (expected.encode() if expected else None)
    assert ALPN_XMPP_CLIENT == b"xmpp-client"


@pytest_twisted.ensureDeferred
async def test_tls11_client_is_refused(cert_files) -> None:
    """TLS 1.2 is the minimum: a client capped at TLS 1.1 cannot complete a handshake."""
    def client(port: int, starttls: bool) -> str:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_max_proto_version(SSL.TLS1_1_VERSION)
        context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        sock = blocking_socket(port)
        try:
            conn = SSL.Connection(context, sock)
            conn.set_connect_state()
            try:
                conn.do_handshake()
            except SSL.Error as e:
                return f"refused: {e}"
            return "connected"
        finally:
            sock.close()

    from twisted.internet import reactor

    context = server_context_factory(*cert_files)
    factory = BindingFactory(context, direct=True)
    listening = reactor.listenSSL(0, factory, context, interface="127.0.0.1")
    try:
        outcome = await threads.deferToThread(client, listening.getHost().port, False)
    finally:
        for conn in factory.connections:
            conn.transport.loseConnection()
        await listening.stopListening()
    assert outcome.startswith("refused")
    assert not factory.result.called


@pytest_twisted.ensureDeferred
async def test_direct_tls_client_offering_only_other_protocols_is_refused(cert_files) -> None:
    """RFC 7301 3.2: no overlap -> no_application_protocol alert (no cross-protocol use of the port)."""
    with pytest.raises(Exception):
        await run_exchange(cert_files, True, python_ssl_client, ["h2", "http/1.1"])
