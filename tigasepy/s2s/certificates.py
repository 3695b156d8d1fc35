"""TLS for server-to-server streams: contexts and the peer certificate check.

Both ends of a server-to-server stream present a certificate: ours is the server's
(``[tls]``); the peer's is checked against the configured trust store (``[s2s] ca_file``,
or the system's CAs) and against the peer's domain (RFC 6125 as profiled by RFC 6120
13.7.1.2: a DNS-ID, with a wildcard in the left-most label, an SRV-ID
``_xmpp-server.<domain>``, or an XmppAddr).

The handshake never fails on the peer's certificate: every certificate is accepted
during the handshake and judged afterwards (``PeerCertificate``), because an invalid one
is no reason to refuse a stream that can still authenticate with Server Dialback
(XEP-0220). Whether a valid certificate is required is policy, decided by the streams.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import extract_patterns
from service_identity.hazmat import DNS_ID, SRV_ID, verify_service_identity
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from tigasepy import tls as server_tls
from tigasepy.log_level import Logger

ALPN_XMPP_SERVER = b"xmpp-server"
"""The ALPN protocol id for server-to-server XMPP (XEP-0368 section 3)."""

_XMPP_ADDR = ObjectIdentifier("1.3.6.1.5.5.7.8.5")
_log = Logger()


def _accept_any(connection: Any, certificate: Any, errno: int, depth: int, ok: int) -> bool:
    """Ask for the peer's certificate but never fail the handshake over it."""
    return True


class TrustStore:
    """The CAs peer certificates must chain to.

    Args:
        ca_file: a PEM bundle; empty for the system's default CA locations.
    """

    def __init__(self, ca_file: str | Path = "") -> None:
        self.ca_file = str(ca_file) if ca_file else ""
        store = crypto.X509Store()
        if self.ca_file:
            store.load_locations(self.ca_file)
        else:
            paths = ssl.get_default_verify_paths()   # the system's, as Python's ssl sees them
            cafile = paths.cafile if paths.cafile and Path(paths.cafile).is_file() else None
            capath = paths.capath if paths.capath and Path(paths.capath).is_dir() else None
            if cafile or capath:
                store.load_locations(cafile, capath)
            else:
                _log.warn("no system CA certificates found: no peer certificate will be trusted "
                          "(set [s2s] ca_file)")
        self._store = store

    def load_into(self, context: SSL.Context) -> None:
        """Make ``context`` ask for the peer's certificate (judged later, never fatal)."""
        context.set_verify(SSL.VERIFY_PEER, _accept_any)

    def chain_error(self, leaf: x509.Certificate, intermediates: list[x509.Certificate]) -> str | None:
        """Why ``leaf`` does not chain to a trusted CA (None when it does)."""
        try:
            context = crypto.X509StoreContext(
                self._store, crypto.X509.from_cryptography(leaf),
                [crypto.X509.from_cryptography(c) for c in intermediates])
            context.verify_certificate()
        except crypto.X509StoreContextError as e:
            return str(e)
        return _usage_error(leaf)


def _usage_error(leaf: x509.Certificate) -> str | None:
    """A server certificate must allow TLS server or client use when it limits its use."""
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if ExtendedKeyUsageOID.SERVER_AUTH in usages or ExtendedKeyUsageOID.CLIENT_AUTH in usages:
        return None
    return "the certificate's extended key usage allows neither TLS server nor client use"


def certificate_matches(certificate: x509.Certificate, domain: str) -> bool:
    """True when ``certificate`` names ``domain`` (RFC 6125: DNS-ID, SRV-ID, or XmppAddr)."""
    try:
        patterns = extract_patterns(certificate)
    except Exception:  # noqa: BLE001 - an unparsable certificate names nothing
        patterns = []
    for identity in (DNS_ID(domain), SRV_ID(f"_xmpp-server.{domain}")):
        try:
            verify_service_identity(patterns, obligatory_ids=[identity], optional_ids=[])
            return True
        except (VerificationError, CertificateError, ValueError):
            continue
    return domain.lower() in (name.lower() for name in xmpp_addrs(certificate))


def xmpp_addrs(certificate: x509.Certificate) -> list[str]:
    """The id-on-xmppAddr otherNames of ``certificate`` (RFC 6120 13.7.1.4)."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out = []
    for other in names.get_values_for_type(x509.OtherName):
        if other.type_id == _XMPP_ADDR:
            text = _der_utf8string(other.value)
            if text is not None:
                out.append(text)
    return out


def _der_utf8string(data: bytes) -> str | None:
    if len(data) < 2 or data[0] != 0x0C:
        return None
    length, offset = data[1], 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 2 or len(data) < 2 + count:
            return None
        length = int.from_bytes(data[2:2 + count], "big")
        offset = 2 + count
    if len(data) != offset + length:
        return None
    try:
        return data[offset:].decode("utf-8")
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True)
class PeerCertificate:
    """What the peer presented on a finished handshake, judged for one domain.

    ``certificate`` is None when the peer sent none; ``chain_error`` says why it does not
    chain to a trusted CA (None when it does).
    """

    certificate: x509.Certificate | None
    chain_error: str | None

    def valid_for(self, domain: str) -> bool:
        """True when the certificate is trusted and names ``domain``."""
        return (self.certificate is not None and self.chain_error is None
                and certificate_matches(self.certificate, domain))

    def problem(self, domain: str) -> str:
        """Why the certificate does not authenticate ``domain`` (for logs)."""
        if self.certificate is None:
            return "no certificate"
        if self.chain_error is not None:
            return self.chain_error
        if not certificate_matches(self.certificate, domain):
            return f"the certificate does not name {domain}"
        return "valid"


def peer_certificate(transport: Any, trust: TrustStore) -> PeerCertificate | None:
    """The peer certificate of a TLS transport whose handshake finished (None without TLS)."""
    try:
        connection = transport.getHandle()
    except Exception:  # noqa: BLE001 - a transport without a handle has no TLS
        return None
    if not isinstance(connection, SSL.Connection) or connection.get_finished() is None:
        return None
    leaf = connection.get_peer_certificate(as_cryptography=True)
    if leaf is None:
        return PeerCertificate(None, "no certificate")
    chain = connection.get_peer_cert_chain(as_cryptography=True) or []
    intermediates = [c for c in chain if c != leaf]
    return PeerCertificate(leaf, trust.chain_error(leaf, intermediates))


class S2STLS:
    """The TLS contexts of the server-to-server streams of one server.

    Args:
        certificate: PEM file with our certificate (then its intermediates).
        private_key: PEM file with its key.
        trust: the trust store peer certificates are judged against.
        host_certificates: virtual hosts with a certificate of their own (``[hosts."D"]``):
            domain -> (certificate, key). An incoming stream whose TLS server name is such
            a domain gets its certificate; an outgoing stream from it presents it.
    """

    def __init__(self, certificate: Path | str, private_key: Path | str, trust: TrustStore,
                 host_certificates: dict[str, tuple[Path, Path]] | None = None) -> None:
        self.trust = trust
        self.certificate = Path(certificate)
        self.private_key = Path(private_key)
        hosts = host_certificates or {}
        # STARTTLS and direct TLS on incoming streams: ALPN xmpp-server, peer certificate asked for.
        self.server = self._server_options(self.certificate, self.private_key, ("tls",))
        by_name = {domain: self._server_options(Path(c), Path(k), ("hosts", domain))
                   for domain, (c, k) in hosts.items()}
        if by_name:
            server_tls.with_sni(self.server, by_name)
        self._client_context = self._make_client_context(self.certificate, self.private_key)
        self._client_by_domain = {domain.lower(): self._make_client_context(Path(c), Path(k))
                                  for domain, (c, k) in hosts.items()}

    def _server_options(self, certificate: Path, private_key: Path, option_path: tuple[str, ...]) -> Any:
        options = server_tls.server_context_factory(certificate, private_key, alpn=(ALPN_XMPP_SERVER,),
                                                    option_path=option_path)
        context = options.getContext()
        self.trust.load_into(context)
        context.set_session_id(b"tigasepy-s2s")
        return options

    def _make_client_context(self, certificate: Path, private_key: Path) -> SSL.Context:
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_TICKET)
        context.use_certificate_chain_file(str(certificate))
        context.use_privatekey_file(str(private_key))
        context.check_privatekey()
        self.trust.load_into(context)
        return context

    def client(self, server_name: str, direct_tls: bool = False, local: str = "") -> "ClientTLS":
        """The connection creator for an outgoing stream from ``local`` to ``server_name``
        (SNI ``server_name``; ALPN on direct TLS; ``local``'s own certificate if it has one)."""
        context = self._client_by_domain.get(local.lower(), self._client_context)
        return ClientTLS(context, server_name, alpn=direct_tls)

    def peer(self, transport: Any) -> PeerCertificate | None:
        """The peer's certificate on ``transport``, judged against the trust store."""
        return peer_certificate(transport, self.trust)


@implementer(IOpenSSLClientConnectionCreator)
class ClientTLS:
    """Creates the client side of one outgoing TLS connection (SNI set to the peer's domain)."""

    def __init__(self, context: SSL.Context, server_name: str, alpn: bool) -> None:
        self._context = context
        self.server_name = server_name
        self.alpn = alpn

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        try:
            connection.set_tlsext_host_name(self.server_name.encode("idna"))
        except UnicodeError:
            pass
        if self.alpn:
            connection.set_alpn_protos([ALPN_XMPP_SERVER])
        connection.set_app_data(tlsProtocol)
        connection.set_connect_state()
        return connection
