"""Two (or more) federating servers in the test process, and certificates for them.

- ``TestCA``: a throw-away certificate authority that issues server certificates
  (serverAuth + clientAuth, DNS names) into a directory, for SASL EXTERNAL tests.
- ``federation_overrides``: the config tables that give a test server its own domain, an
  s2s listener on a chosen loopback port, static routes to its peers and (optionally)
  a CA-issued certificate and trust store.

Static routes only, on 127.0.0.1: these tests never resolve or reach a real name.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, Mapping

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from support.server import LOOPBACK, RunningServer
from support.xmpp_clients import ClientPool, TestClient


class TestCA:
    """A certificate authority for one test: a self-signed root that issues server certificates."""

    __test__ = False

    def __init__(self, directory: Path, name: str = "tigasepy test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / "ca.crt"
        self.path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, domains: list[str], stem: str | None = None) -> tuple[Path, Path]:
        """A certificate naming ``domains`` (and their ``*.`` subdomains); returns (cert, key) paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        names: list[x509.GeneralName] = []
        for domain in domains:
            names += [x509.DNSName(domain), x509.DNSName(f"*.{domain}")]
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        stem = stem or domains[0]
        cert_path = self.directory / f"{stem}.crt"
        key_path = self.directory / f"{stem}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
        return cert_path, key_path


def federation_overrides(domain: str, s2s_port: int, routes: Mapping[str, str], *,
                         certificate: tuple[Path, Path] | None = None, ca_file: Path | None = None,
                         s2s: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Config tables for one federating test server (see the module docstring).

    Args:
        domain: the server's one domain.
        s2s_port: its STARTTLS s2s listener on 127.0.0.1.
        routes: ``[s2s.routes]``, e.g. ``{"b.localhost": "127.0.0.1:40001"}``.
        certificate: a (certificate, key) pair for ``[tls]``; None: a generated self-signed one.
        ca_file: ``[s2s] ca_file`` (None: the system's CAs, which trust no test certificate).
        s2s: more ``[s2s]`` options.
    """
    section: dict[str, Any] = {"interface": LOOPBACK, "port": s2s_port, "direct_tls_port": 0, "use_dns": False,
                               "routes": dict(routes)}
    if ca_file is not None:
        section["ca_file"] = str(ca_file)
    section.update(s2s or {})
    out: dict[str, Any] = {"server": {"domains": [domain]}, "s2s": section}
    if certificate is not None:
        out["tls"] = {"certificate": str(certificate[0]), "private_key": str(certificate[1])}
    return out



class FederatedClientPool(ClientPool):
    """A ``ClientPool`` whose clients trust ``cafile`` (a test CA) when given, else the
    server's generated certificate."""

    def __init__(self, server: RunningServer, cafile: Path | None = None) -> None:
        super().__init__(server)
        self.cafile = cafile

    def new(self, user: str, password: str | None = None, *, resource: str | None = None,
            mechanism: str | None = None, max_tls_version: Any = None) -> TestClient:
        if self.cafile is None:
            return super().new(user, password, resource=resource, mechanism=mechanism,
                               max_tls_version=max_tls_version)
        jid = self.server.jid(user)
        password = password if password is not None else self.server.passwords[jid]
        full = f"{jid}/{resource}" if resource else jid
        client = TestClient(full, password, cafile=self.cafile, mechanism=mechanism,
                            max_tls_version=max_tls_version)
        self.clients.append(client)
        return client


async def subscribe_presence_and_chat(alice: TestClient, bob: TestClient) -> None:
    """The federation scenario between two online clients on different servers: mutual
    subscription (each approves the other's request), each sees the other's presence,
    a message each way (bare and full JID), then a presence change reaches the contact."""
    from support.xmpp_clients import fetch_roster, is_chat, is_presence, is_push_for

    a, b = alice.boundjid.bare, bob.boundjid.bare
    a_full, b_full = alice.boundjid.full, bob.boundjid.full

    alice.send_presence(pto=b, ptype="subscribe")
    request = await bob.presences.wait_for(is_presence("subscribe", a), what=f"subscribe from {a}")
    assert request.xml.get("from") == a
    bob.send_presence(pto=a, ptype="subscribed")
    await alice.roster_pushes.wait_for(is_push_for(b, subscription="to"), what=f"push: {b} to")
    seen = await alice.presences.wait_for(is_presence(None, b), what=f"{b}'s presence")
    assert seen.xml.get("from") == b_full

    bob.send_presence(pto=a, ptype="subscribe")
    await alice.presences.wait_for(is_presence("subscribe", b), what=f"subscribe from {b}")
    alice.send_presence(pto=b, ptype="subscribed")
    await bob.roster_pushes.wait_for(is_push_for(a, subscription="both"), what=f"push: {a} both")
    seen = await bob.presences.wait_for(is_presence(None, a), what=f"{a}'s presence")
    assert seen.xml.get("from") == a_full
    assert (await fetch_roster(alice))[b]["subscription"] == "both"
    assert (await fetch_roster(bob))[a]["subscription"] == "both"

    alice.send_message(mto=b, mbody=f"hello from {a}", mtype="chat")
    got = await bob.messages.wait_for(is_chat(f"hello from {a}"), what=f"{a}'s message")
    assert got.xml.get("from") == a_full
    bob.send_message(mto=a_full, mbody=f"hello from {b}", mtype="chat")
    got = await alice.messages.wait_for(is_chat(f"hello from {b}"), what=f"{b}'s reply")
    assert got.xml.get("from") == b_full

    bob.send_presence(pstatus="away for lunch", pshow="away")
    away = await alice.presences.wait_for(lambda p: p.xml.get("from") == b_full and p["show"] == "away",
                                          what=f"{b}'s away presence")
    assert away["status"] == "away for lunch"
    alice.send_presence(pshow="dnd")
    await bob.presences.wait_for(lambda p: p.xml.get("from") == a_full and p["show"] == "dnd",
                                 what=f"{a}'s dnd presence")
