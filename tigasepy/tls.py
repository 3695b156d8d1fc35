"""TLS for tigasepy: certificates, server contexts and channel-binding data.

- ``ensure_certificate``: the configured certificate, or a self-signed one generated on first
  start in the data directory (the all-in-one deployment of ARCHITECTURE.md section 5).
- ``server_context_factory``: one pyOpenSSL context factory for both STARTTLS (RFC 6120 5)
  and direct TLS (XEP-0368), TLS 1.2 minimum.
- ``server_context_for``: the server's context for a ``Config``: the ``[tls]`` (or generated)
  certificate, and each virtual host's own (``[hosts."DOMAIN"] certificate``) chosen by the
  name the client asks for (TLS SNI, ``with_sni``).
- ``channel_binding``: what SASL ``-PLUS`` mechanisms bind to on a finished handshake:
  ``tls-exporter`` (RFC 9266), ``tls-server-end-point`` and ``tls-unique`` (RFC 5929).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.ssl import CertificateOptions, TLSVersion

from tigasepy.config import ConfigError
from tigasepy.interfaces import ChannelBinding
from tigasepy.log_level import Logger

if TYPE_CHECKING:
    from tigasepy.config import Config

__all__ = [
    "ALPN_XMPP_CLIENT",
    "CERTIFICATE_VALIDITY_DAYS",
    "channel_binding",
    "ensure_certificate",
    "generate_self_signed",
    "server_context_factory",
    "prepare_retarget",
    "retarget",
    "server_context_for",
    "with_sni",
]

_log = Logger()

ALPN_XMPP_CLIENT = b"xmpp-client"
"""The ALPN protocol id for client-to-server XMPP (XEP-0368 section 3)."""

CERTIFICATE_VALIDITY_DAYS = 3650
"""How long a generated self-signed certificate is valid (ten years)."""

_EXPORTER_LABEL = b"EXPORTER-Channel-Binding"  # RFC 9266 section 2
_GENERATED_ORGANIZATION = "tigasepy self-signed"  # marks certificates ensure_certificate may replace


# --- certificates ------------------------------------------------------------------------

def ensure_certificate(config: Config) -> tuple[Path, Path]:
    """The certificate and private-key files the server should use.

    With ``[tls] certificate``/``private_key`` set, those files (relative paths are taken
    from the config file's folder) must exist. With them empty, the files are
    ``<data_dir>/<first domain>.crt`` and ``.key``; when either is missing, or when the
    certificate is one tigasepy generated and a domain has been added to the config since,
    a self-signed certificate for every configured domain (and its subdomains) is
    generated there.

    Args:
        config: the server configuration.

    Returns:
        ``(certificate_path, private_key_path)``.

    Raises:
        ConfigError: a configured file does not exist.
    """
    if config.tls.certificate:
        base = Path(config.source).parent if config.source else Path.cwd()
        cert_path = base / Path(config.tls.certificate).expanduser()
        key_path = base / Path(config.tls.private_key).expanduser()
        for path, option in ((cert_path, "certificate"), (key_path, "private_key")):
            if not path.is_file():
                raise ConfigError(f"no such file: {path}", ("tls", option))
        return cert_path, key_path

    domains = config.server.domains
    if not domains:
        raise ConfigError("at least one domain is required", ("server", "domains"))
    data = config.data_path
    cert_path = data / f"{domains[0]}.crt"
    key_path = data / f"{domains[0]}.key"
    if cert_path.is_file() and key_path.is_file() and _covers(cert_path, domains):
        return cert_path, key_path

    cert_pem, key_pem = generate_self_signed(domains)
    data.mkdir(parents=True, exist_ok=True)
    # The key first: a certificate without its key is never left behind as "done".
    _write_atomically(key_path, key_pem, mode=0o600)
    _write_atomically(cert_path, cert_pem, mode=0o644)
    _log.warn(
        "Generated a self-signed TLS certificate for {domains} in {certificate} "
        "(private key {private_key}); clients must be told to accept it. Set [tls] certificate "
        "and private_key to use a certificate from a CA.",
        domains=", ".join(domains),
        certificate=str(cert_path),
        private_key=str(key_path),
    )
    return cert_path, key_path


def generate_self_signed(
    domains: tuple[str, ...] | list[str],
    *,
    now: datetime.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A new self-signed server certificate and its private key, both PEM.

    The key is EC P-256; the certificate is signed with ECDSA/SHA-256, valid for
    ``CERTIFICATE_VALIDITY_DAYS``, and names every domain and ``*.domain`` in its
    subjectAltName (the wildcard covers components such as ``muc.example.org``).

    Args:
        domains: the XMPP domains; the first one is also the subject common name.
        now: the issue time (for tests); the current UTC time by default.

    Returns:
        ``(certificate_pem, private_key_pem)``.
    """
    if not domains:
        raise ValueError("at least one domain is required")
    now = now or datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for domain in domains:
        names.extend(_alt_names(domain))
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, _ascii_domain(domains[0])),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, _GENERATED_ORGANIZATION),
    ])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))  # tolerate client clock skew
        .not_valid_after(now + datetime.timedelta(days=CERTIFICATE_VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


def _covers(cert_path: Path, domains: tuple[str, ...]) -> bool:
    """False for a certificate we generated that lacks a configured domain (one was added
    since), so that it is generated anew; True for any other certificate."""
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return False
    organizations = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if [o.value for o in organizations] != [_GENERATED_ORGANIZATION]:
        return True  # someone else's certificate: never replace it
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    present = {str(n.value) for n in names}
    wanted = {str(n.value) for domain in domains for n in _alt_names(domain)}
    return wanted <= present


def _ascii_domain(domain: str) -> str:
    try:
        return domain.encode("ascii").decode("ascii")
    except UnicodeEncodeError:
        return domain.encode("idna").decode("ascii")


def _alt_names(domain: str) -> list[x509.GeneralName]:
    try:
        return [x509.IPAddress(ipaddress.ip_address(domain))]
    except ValueError:
        pass
    name = _ascii_domain(domain)
    return [x509.DNSName(name), x509.DNSName(f"*.{name}")]


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# --- contexts ----------------------------------------------------------------------------

def server_context_factory(
    cert_path: Path | str,
    key_path: Path | str,
    *,
    alpn: tuple[bytes, ...] = (ALPN_XMPP_CLIENT,),
    option_path: tuple[str, ...] = ("tls",),
    groups: tuple[str, ...] = (),
) -> CertificateOptions:
    """A server TLS context factory for STARTTLS and direct TLS.

    Usable as ``transport.startTLS(factory)`` and as the context factory of
    ``SSL4ServerEndpoint``/``listenSSL``. TLS 1.2 is the minimum; session resumption stays
    off (Twisted's default), so every TLS 1.2 handshake is a full one, which
    ``channel_binding``'s ``tls-unique`` relies on. A client offering one of ``alpn``
    gets it selected and a client offering no ALPN connects; a client offering only
    other protocols gets the RFC 7301 3.2 ``no_application_protocol`` alert, so that a
    browser or another service cannot be pointed at our port (cross-protocol attacks
    such as ALPACA).

    Args:
        cert_path: PEM file with the server certificate first, then any intermediates.
        key_path: PEM file with the unencrypted private key.
        alpn: the ALPN protocol ids to accept, preferred first (XEP-0368: ``xmpp-client``
            for c2s, ``xmpp-server`` for s2s); empty turns ALPN off.
        option_path: the config table the files come from, for errors (``("hosts", "a.org")``).
        groups: the key-exchange groups to allow, preferred first (``[tls] groups``); empty
            keeps OpenSSL's default.

    Raises:
        ConfigError: a file cannot be read or parsed, or the key does not match.
    """
    cert_path, key_path = Path(cert_path), Path(key_path)
    try:
        chain = x509.load_pem_x509_certificates(cert_path.read_bytes())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load the certificate {cert_path}: {e}", option_path + ("certificate",)) from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"cannot load the private key {key_path}: {e}", option_path + ("private_key",)) from None
    if chain[0].public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise ConfigError(f"the private key {key_path} does not match {cert_path}", option_path + ("private_key",))
    options = CertificateOptions(
        # pyOpenSSL takes cryptography objects directly (its own X509/PKey are deprecated).
        privateKey=key,
        certificate=chain[0],
        extraCertChain=chain[1:],
        raiseMinimumTo=TLSVersion.TLSv1_2,
        acceptableProtocols=list(alpn) or None,
    )
    if groups:
        set_groups(options.getContext(), groups, ("tls", "groups"))
    return options


def set_groups(context: SSL.Context, groups: tuple[str, ...], option_path: tuple[str, ...]) -> None:
    """Limit ``context``'s key exchange to ``groups`` (OpenSSL names), preferred first.

    Raises:
        ConfigError: OpenSSL knows none or not all of the names.
    """
    # pyOpenSSL has no public call for this; its bindings have OpenSSL's own (the old
    # "curves" name of SSL_CTX_set1_groups_list, which takes every group, hybrids too).
    from OpenSSL._util import lib as _openssl

    if not _openssl.SSL_CTX_set1_curves_list(context._context, ":".join(groups).encode("ascii")):
        raise ConfigError(f"OpenSSL does not know all of the key-exchange groups {list(groups)}", option_path)


def host_certificates(config: Config) -> dict[str, tuple[Path, Path]]:
    """The virtual hosts with a certificate of their own: domain -> (certificate, private key).

    Paths are relative to the config file's folder.

    Raises:
        ConfigError: a configured file does not exist.
    """
    base = Path(config.source).parent if config.source else Path.cwd()
    out = {}
    for domain, host in config.hosts.items():
        if not host.certificate:
            continue
        paths = []
        for name, option in ((host.certificate, "certificate"), (host.private_key, "private_key")):
            path = base / Path(name).expanduser()
            if not path.is_file():
                raise ConfigError(f"no such file: {path}", ("hosts", domain, option))
            paths.append(path)
        out[domain] = (paths[0], paths[1])
    return out


def _name_key(name: str) -> str:
    return _ascii_domain(name).lower().rstrip(".")


class _ServerNames:
    """The servername callback of a server context: switches a connection to the context of
    the name the client asked for (``by_name``), else to ``fallback`` when one is set (the
    server's certificate made anew since the listeners started), else keeps the original."""

    def __init__(self) -> None:
        self.by_name: dict[str, SSL.Context] = {}
        self.fallback: SSL.Context | None = None

    def __call__(self, connection: SSL.Connection) -> None:
        name = connection.get_servername()
        context = self.by_name.get(name.decode("ascii", "replace").lower().rstrip(".")) if name else None
        if context is None:
            context = self.fallback
        if context is not None:
            connection.set_context(context)


def _server_names(factory: CertificateOptions) -> _ServerNames:
    names = getattr(factory, "_tigasepy_server_names", None)
    if names is None:
        names = _ServerNames()
        factory.getContext().set_tlsext_servername_callback(names)
        factory._tigasepy_server_names = names  # type: ignore[attr-defined]
    return names


def server_context_for(config: Config, *, alpn: tuple[bytes, ...] = (ALPN_XMPP_CLIENT,)) -> CertificateOptions:
    """The server's TLS context factory for ``config``.

    The certificate of ``[tls]`` (or the generated one, ``ensure_certificate``) by default;
    a client that names a virtual host with a certificate of its own (``[hosts."DOMAIN"]
    certificate``/``private_key``) in its TLS server name indication gets that one.
    ``retarget`` points the same factory at another config's certificates later (virtual
    hosts added or removed at run time), so listeners and streams keep using it.

    Raises:
        ConfigError: a certificate or key file is missing, unreadable or mismatched.
    """
    cert, key = ensure_certificate(config)
    groups = config.tls.groups
    default = server_context_factory(cert, key, alpn=alpn, groups=groups)
    by_name = {domain: server_context_factory(c, k, alpn=alpn, option_path=("hosts", domain), groups=groups)
               for domain, (c, k) in host_certificates(config).items()}
    return with_sni(default, by_name)


def prepare_retarget(config: Config, *, alpn: tuple[bytes, ...] = (ALPN_XMPP_CLIENT,)) -> tuple[Any, Any]:
    """The contexts ``retarget`` installs for ``config`` (generates the server's certificate
    anew when a domain was added); nothing in service changes yet.

    Raises:
        ConfigError: as ``server_context_for``.
    """
    cert, key = ensure_certificate(config)
    groups = config.tls.groups
    fallback = server_context_factory(cert, key, alpn=alpn, groups=groups).getContext()
    by_name = {_name_key(domain): server_context_factory(c, k, alpn=alpn, option_path=("hosts", domain),
                                                          groups=groups).getContext()
               for domain, (c, k) in host_certificates(config).items()}
    return fallback, by_name


def retarget(factory: CertificateOptions, prepared: tuple[Any, Any]) -> None:
    """Make ``factory`` (from ``server_context_for``) serve the contexts ``prepared`` by
    ``prepare_retarget``: new handshakes get them, open connections are untouched."""
    names = _server_names(factory)
    names.fallback, names.by_name = prepared


def with_sni(default: CertificateOptions, by_name: dict[str, CertificateOptions]) -> CertificateOptions:
    """``default``, switching each connection to ``by_name[server name]`` when the client's
    TLS server name indication (RFC 6066 section 3) is one of its keys (compared
    case-insensitively, IDNs as A-labels); any other name, or none, keeps ``default``.

    Returns ``default`` itself (its context gets the servername callback).
    """
    names = _server_names(default)
    names.by_name = {_name_key(name): options.getContext() for name, options in by_name.items()}
    return default


# --- channel binding ---------------------------------------------------------------------

def channel_binding(transport: Any, *, server: bool = True) -> ChannelBinding | None:
    """Channel-binding data of a TLS transport whose handshake has completed.

    - ``tls-exporter`` (RFC 9266): on TLS 1.3 only.
    - ``tls-server-end-point`` (RFC 5929 section 4): the hash of the server's certificate,
      with SHA-256 where its signature uses MD5 or SHA-1, else the signature's hash.
    - ``tls-unique`` (RFC 5929 section 3): on TLS 1.2 only; the first Finished message of
      the handshake, which on a full handshake is the client's.

    Args:
        transport: a Twisted TLS transport (after ``startTLS`` or from a TLS listener).
        server: True for a stream we accepted (c2s, incoming s2s); False for one we
            initiated, where the client's view is computed.

    Returns:
        The binding data, or None when the transport is not TLS or the handshake has
        not finished yet.
    """
    try:
        conn = transport.getHandle()
    except Exception:  # noqa: BLE001 - a transport without a handle has no TLS
        return None
    if not isinstance(conn, SSL.Connection) or conn.get_finished() is None:
        return None
    version = conn.get_protocol_version_name()
    data: dict[str, bytes] = {}
    if version == "TLSv1.3":
        data["tls-exporter"] = conn.export_keying_material(_EXPORTER_LABEL, 32)
    else:
        first_finished = conn.get_peer_finished() if server else conn.get_finished()
        if first_finished:
            data["tls-unique"] = first_finished
    if server:
        certificate = conn.get_certificate(as_cryptography=True)
    else:
        certificate = conn.get_peer_certificate(as_cryptography=True)
    if certificate is not None:
        end_point = _server_end_point_hash(certificate)
        if end_point is not None:
            data["tls-server-end-point"] = end_point
    return ChannelBinding(data=data)


def _server_end_point_hash(certificate: x509.Certificate) -> bytes | None:
    algorithm = certificate.signature_hash_algorithm
    if algorithm is None:  # e.g. Ed25519: RFC 5929 defines nothing
        return None
    if isinstance(algorithm, (hashes.MD5, hashes.SHA1)):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(certificate.public_bytes(serialization.Encoding.DER))
    return digest.finalize()
