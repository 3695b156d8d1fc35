"""Peer certificates on s2s streams: chain to the trust store, names per RFC 6125 / RFC 6120 13.7."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from support.federation import TestCA
from tigasepy.s2s.certificates import (
    PeerCertificate, S2STLS, TrustStore, certificate_matches, xmpp_addrs,
)
from tigasepy.tls import generate_self_signed


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def make(names: list[x509.GeneralName], usages: list[ObjectIdentifier] | None = None) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored.example")])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.SubjectAlternativeName(names), critical=False))
    if usages is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(key, hashes.SHA256())


def utf8(text: str) -> bytes:
    data = text.encode()
    return bytes([0x0C, len(data)]) + data


def test_dns_names_match_exactly_and_wildcards_one_label() -> None:
    cert = make([x509.DNSName("b.example"), x509.DNSName("*.b.example")])
    assert certificate_matches(cert, "b.example")
    assert certificate_matches(cert, "muc.b.example")
    assert not certificate_matches(cert, "x.muc.b.example")
    assert not certificate_matches(cert, "c.example")


def test_common_name_alone_does_not_count() -> None:
    assert not certificate_matches(make([x509.DNSName("other.example")]), "ignored.example")


def test_srv_id_for_xmpp_server_matches() -> None:
    srv = x509.OtherName(ObjectIdentifier("1.3.6.1.5.5.7.8.7"), bytes([0x16, 22]) + b"_xmpp-server.b.example")
    assert certificate_matches(make([srv]), "b.example")


def test_xmpp_addr_matches() -> None:
    addr = x509.OtherName(ObjectIdentifier("1.3.6.1.5.5.7.8.5"), utf8("b.example"))
    cert = make([addr])
    assert xmpp_addrs(cert) == ["b.example"]
    assert certificate_matches(cert, "b.example") and not certificate_matches(cert, "c.example")


def test_chain_to_the_configured_ca(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    cert_path, _key = ca.issue(["b.example"])
    trust = TrustStore(ca.path)
    leaf = load(cert_path)
    assert trust.chain_error(leaf, []) is None
    peer = PeerCertificate(leaf, None)
    assert peer.valid_for("b.example") and not peer.valid_for("c.example")
    assert "does not name c.example" in peer.problem("c.example")


def test_self_signed_or_other_ca_is_not_trusted(tmp_path: Path) -> None:
    trust = TrustStore(TestCA(tmp_path / "one").path)
    other = TestCA(tmp_path / "two")
    assert trust.chain_error(load(other.issue(["b.example"])[0]), []) is not None
    cert_pem, _key = generate_self_signed(["b.example"])
    assert trust.chain_error(x509.load_pem_x509_certificate(cert_pem), []) is not None


def test_system_store_does_not_trust_a_self_signed_certificate() -> None:
    cert_pem, _key = generate_self_signed(["b.example"])
    assert TrustStore().chain_error(x509.load_pem_x509_certificate(cert_pem), []) is not None


def test_a_certificate_for_other_uses_is_refused(tmp_path: Path) -> None:
    email_only = make([x509.DNSName("b.example")], [ExtendedKeyUsageOID.EMAIL_PROTECTION])
    server_only = make([x509.DNSName("b.example")], [ExtendedKeyUsageOID.SERVER_AUTH])
    from tigasepy.s2s.certificates import _usage_error

    assert _usage_error(email_only) is not None
    assert _usage_error(server_only) is None      # a server certificate presented as TLS client


def test_no_certificate_is_never_valid() -> None:
    peer = PeerCertificate(None, "no certificate")
    assert not peer.valid_for("b.example") and peer.problem("b.example") == "no certificate"


def test_contexts_build_from_our_certificate(tmp_path: Path) -> None:
    cert_pem, key_pem = generate_self_signed(["a.example"])
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    tls = S2STLS(tmp_path / "c.pem", tmp_path / "k.pem", TrustStore())
    creator = tls.client("b.example", direct_tls=True)
    assert creator.server_name == "b.example" and creator.alpn
    assert tls.server.getContext() is not None


def test_an_unreadable_ca_file_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(Exception):
        TrustStore(tmp_path / "missing.pem")


def test_client_connection_creator_provides_its_interface(tmp_path: Path) -> None:
    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
    from zope.interface.verify import verifyObject

    cert_pem, key_pem = generate_self_signed(["a.example"])
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    creator = S2STLS(tmp_path / "c.pem", tmp_path / "k.pem", TrustStore()).client("b.example")
    verifyObject(IOpenSSLClientConnectionCreator, creator)
    connection = creator.clientConnectionForTLS(object())
    assert connection.get_servername() == b"b.example"
