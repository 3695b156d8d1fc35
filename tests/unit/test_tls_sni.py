"""Per-virtual-host certificates chosen by TLS server name indication (``tls.server_context_for``)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from tigasepy import tls
from tigasepy.config import ConfigError, config_from_dict


def _handshake(factory, server_name: bytes | None) -> str:
    """Handshake in memory with a client asking for ``server_name``; the common name the server showed."""
    server = SSL.Connection(factory.getContext(), None)
    # What Twisted's TLS protocol provides to the ALPN callback (no protocol-negotiating factory).
    server.set_app_data(SimpleNamespace(factory=SimpleNamespace(wrappedFactory=object())))
    server.set_accept_state()
    client_context = SSL.Context(SSL.TLS_METHOD)
    client_context.set_alpn_protos([tls.ALPN_XMPP_CLIENT])
    client = SSL.Connection(client_context, None)
    if server_name is not None:
        client.set_tlsext_host_name(server_name)
    client.set_connect_state()
    for _ in range(20):
        for sender, receiver in ((client, server), (server, client)):
            try:
                sender.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                data = sender.bio_read(65536)
            except SSL.WantReadError:
                data = b""
            if data:
                receiver.bio_write(data)
        if client.get_peer_certificate() is not None and client.get_finished() is not None:
            break
    certificate = client.get_peer_certificate(as_cryptography=True)
    assert client.get_alpn_proto_negotiated() == tls.ALPN_XMPP_CLIENT
    return certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def _write_pair(folder: Path, domain: str) -> tuple[str, str]:
    cert, key = tls.generate_self_signed([domain])
    (folder / f"{domain}.pem").write_bytes(cert)
    (folder / f"{domain}.key").write_bytes(key)
    return f"{domain}.pem", f"{domain}.key"


def _config(tmp_path: Path, hosts: dict) -> object:
    config = config_from_dict({"server": {"domains": ["a.example", "b.example", "bücher.example"],
                                          "data_dir": str(tmp_path / "data")}, "hosts": hosts},
                              source=str(tmp_path / "tigasepy.toml"))
    return config


def test_a_host_with_its_own_certificate_gets_it_by_sni_others_get_the_default(tmp_path):
    cert, key = _write_pair(tmp_path, "b.example")
    idn_cert, idn_key = _write_pair(tmp_path, "xn--bcher-kva.example")
    config = _config(tmp_path, {"b.example": {"certificate": cert, "private_key": key},
                                "bücher.example": {"certificate": idn_cert, "private_key": idn_key}})
    factory = tls.server_context_for(config)
    assert _handshake(factory, b"b.example") == "b.example"
    assert _handshake(factory, b"B.Example") == "b.example"
    assert _handshake(factory, b"xn--bcher-kva.example") == "xn--bcher-kva.example"
    assert _handshake(factory, b"a.example") == "a.example"     # the generated one, first domain
    assert _handshake(factory, b"elsewhere.example") == "a.example"
    assert _handshake(factory, None) == "a.example"


def test_without_host_certificates_the_context_is_the_plain_one(tmp_path):
    factory = tls.server_context_for(_config(tmp_path, {}))
    assert _handshake(factory, b"b.example") == "a.example"


def test_missing_or_mismatched_host_files_name_the_host_option(tmp_path):
    with pytest.raises(ConfigError, match=r"hosts\.b\.example\.certificate: no such file"):
        tls.server_context_for(_config(tmp_path, {"b.example": {"certificate": "x.pem", "private_key": "x.key"}}))
    cert, _key = _write_pair(tmp_path, "b.example")
    _other_cert, other_key = _write_pair(tmp_path, "c.example")
    with pytest.raises(ConfigError, match=r"hosts\.b\.example\.private_key: the private key .* does not match"):
        tls.server_context_for(_config(tmp_path, {"b.example": {"certificate": cert, "private_key": other_key}}))
    x509.load_pem_x509_certificate((tmp_path / cert).read_bytes())


def test_unknown_key_exchange_group_is_a_config_error_naming_the_option(tmp_path):
    config = config_from_dict({"server": {"domains": ["a.example"], "data_dir": str(tmp_path / "data")},
                               "tls": {"groups": ["X25519", "no-such-group"]}},
                              source=str(tmp_path / "tigasepy.toml"))
    with pytest.raises(ConfigError) as error:
        tls.server_context_for(config)
    assert "groups" in str(error.value) and "no-such-group" in str(error.value)


@pytest.mark.parametrize("name", ["", "X25519:P-256", "P 256"])
def test_malformed_key_exchange_group_name_is_refused_when_the_config_is_read(tmp_path, name):
    with pytest.raises(ConfigError) as error:
        config_from_dict({"server": {"domains": ["a.example"]}, "tls": {"groups": [name]}},
                         source=str(tmp_path / "tigasepy.toml"))
    assert "groups" in str(error.value)
