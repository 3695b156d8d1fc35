"""[auth] authenticators / anonymous / [auth.ldap] / [auth.hosts."DOMAIN"]: parsing, validation, building."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from tigasepy.auth.anonymous import AnonymousAuthenticator
from tigasepy.auth.factory import build_authentication, ldap_settings
from tigasepy.auth.internal import InternalAuthenticator
from tigasepy.auth.ldap import LdapAuthenticator
from tigasepy.config import ConfigError, config_from_dict, default_config_text, load_config
from tigasepy.interfaces import SaslContext
from tigasepy.storage.interfaces import IAccountStore
from tigasepy.storage.memory import MemoryAccountStore

LDAP = {"urls": ["ldaps://ldap.example.org"], "dn_template": "uid={user},ou=people,dc=example,dc=org"}


def config(auth: dict, domains=("example.org",), source: str = "", **more):
    return config_from_dict({"server": {"domains": list(domains), "data_dir": "data"}, "auth": auth, **more},
                            source=source)


def error(auth: dict, domains=("example.org",)) -> str:
    with pytest.raises(ConfigError) as info:
        config(auth, domains)
    return str(info.value)


def test_defaults_keep_the_internal_authenticator_only():
    auth = config({}).auth
    assert auth.authenticators == ("internal",) and auth.anonymous is False
    assert auth.chain_of("example.org") == ("internal",) and not auth.anonymous_on("example.org")
    assert auth.ldap.urls == ()


def test_per_host_overrides():
    auth = config({"authenticators": ["ldap", "internal"], "ldap": LDAP,
                   "hosts": {"guest.example.org": {"authenticators": [], "anonymous": True},
                             "example.net": {"anonymous": True}}},
                  domains=("example.org", "guest.example.org", "example.net")).auth
    assert auth.chain_of("example.org") == ("ldap", "internal")
    assert auth.chain_of("guest.example.org") == () and auth.anonymous_on("guest.example.org")
    assert auth.chain_of("example.net") == ("ldap", "internal") and auth.anonymous_on("example.net")


@pytest.mark.parametrize("auth,message", [
    ({"authenticators": ["kerberos"]}, "auth.authenticators: unknown authenticator 'kerberos'"),
    ({"authenticators": ["internal", "internal"]}, "auth.authenticators: an authenticator is named twice"),
    ({"authenticators": []}, "auth.authenticators: no authenticator and anonymous = false"),
    ({"authenticators": "internal"}, "auth.authenticators: must be a list"),
    ({"anonymous": "yes"}, "auth.anonymous: must be true or false"),
    ({"authenticators": ["ldap"]}, 'auth.ldap.urls: required when an authenticator chain names "ldap"'),
    ({"hosts": {"example.org": {"authenticators": ["ldap"]}}}, "auth.ldap.urls: required"),
    ({"hosts": {"elsewhere.org": {}}}, "auth.hosts.elsewhere.org: not a hosted domain"),
    ({"hosts": {"example.org": {"authenticators": []}}},
     "auth.hosts.example.org.authenticators: no authenticator and anonymous = false"),
    ({"hosts": {"example.org": {"colour": "red"}}}, "auth.hosts.example.org.colour: unknown option"),
    ({"hosts": {"example.org": "internal"}}, "auth.hosts.example.org: must be a table"),
    ({"hosts": ["example.org"]}, "auth.hosts: must be a table"),
    ({"ldap": {**LDAP, "urls": ["http://ldap.example.org"]}}, "auth.ldap.urls: 'http://ldap.example.org' is not"),
    ({"ldap": {**LDAP, "urls": ["ldap://ldap.example.org"], "starttls": False}},
     "auth.ldap.starttls: ldap://ldap.example.org: passwords would cross the network in clear text"),
    ({"ldap": {**LDAP, "dn_template": "ou=people,dc=example,dc=org"}}, "auth.ldap.dn_template: "),
    ({"ldap": {**LDAP, "bind_mode": "magic"}}, 'auth.ldap.bind_mode: must be "direct" or "search"'),
    ({"ldap": {**LDAP, "bind_mode": "search"}}, 'auth.ldap.search_base: required for bind_mode = "search"'),
    ({"ldap": {**LDAP, "bind_mode": "search", "search_base": "dc=x", "search_filter": "(uid=alice)"}},
     "auth.ldap.search_filter: must contain {user}"),
    ({"ldap": {**LDAP, "bind_mode": "search", "search_base": "dc=x", "search_filter": "uid={user}"}},
     "auth.ldap.search_filter: must be an LDAP filter"),
    ({"ldap": {**LDAP, "bind_mode": "search", "search_base": "dc=x", "bind_dn": "cn=svc"}},
     "auth.ldap.bind_dn: bind_dn and bind_password_file go together"),
    ({"ldap": {**LDAP, "require_filter": "(&(a=b)"}}, "auth.ldap.require_filter: must be an LDAP filter"),
    ({"ldap": {**LDAP, "group_member_attribute": "member)(x=*"}}, "auth.ldap.group_member_attribute"),
    ({"ldap": {**LDAP, "timeout_s": 0}}, "auth.ldap.timeout_s: must be >= 0.1"),
    ({"ldap": {**LDAP, "connect_timeout_s": "5"}}, "auth.ldap.connect_timeout_s: must be a number"),
    ({"ldap": {**LDAP, "pool_size": 0}}, "auth.ldap.pool_size: must be >= 1"),
    ({"ldap": {**LDAP, "password": "x"}}, "auth.ldap.password: unknown option"),
])
def test_errors_name_the_option(auth, message):
    assert error(auth, domains=("example.org",)).startswith(message)


@pytest.mark.parametrize("url", ["ldap://127.0.0.1:389", "ldap://localhost", "ldap://[::1]:3890"])
def test_clear_text_ldap_is_allowed_on_loopback(url):
    assert config({"ldap": {**LDAP, "urls": [url], "starttls": False}}).auth.ldap.starttls is False


def test_default_config_text_parses_and_documents_the_options():
    text = default_config_text("example.org")
    tomllib.loads(text)
    for option in ("authenticators", "anonymous", "[auth.ldap]", "dn_template", "bind_password_file",
                   "group_dn", "tls_verify", "pool_size", "[auth.hosts."):
        assert option in text, option
    assert "uid={user},ou=people" in text


# -- building the chains -----------------------------------------------------------------------

class Stores:
    def __init__(self) -> None:
        self.accounts = MemoryAccountStore()

    def get(self, interface):
        assert interface is IAccountStore
        return self.accounts


class FakeReactor(Clock):
    def getThreadPool(self):  # noqa: N802 - Twisted's name
        raise AssertionError("not used while building")


def test_build_makes_one_chain_per_host(tmp_path: Path):
    (tmp_path / "ldap-pw").write_text("service-secret\nignored\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    path = tmp_path / "tigasepy.toml"
    path.write_text('''
[server]
domains = ["example.org", "guest.example.org", "example.net"]
data_dir = "data"
[auth]
authenticators = ["ldap", "internal"]
[auth.ldap]
urls = ["ldaps://ldap.example.org"]
bind_mode = "search"
search_base = "ou=people,dc=example,dc=org"
bind_dn = "cn=xmpp,ou=services,dc=example,dc=org"
bind_password_file = "ldap-pw"
ca_file = "ca.pem"
[auth.hosts."guest.example.org"]
authenticators = []
anonymous = true
[auth.hosts."example.net"]
authenticators = ["internal"]
''')
    cfg = load_config(path)
    built = build_authentication(cfg, Stores(), FakeReactor())
    org, guest, net = (built.chains[d] for d in cfg.server.domains)
    assert [type(m) for m in org.members] == [LdapAuthenticator, InternalAuthenticator]
    assert [type(m) for m in guest.members] == [AnonymousAuthenticator]
    assert [type(m) for m in net.members] == [InternalAuthenticator]
    assert org.members[1] is net.members[0], "authenticators are shared between hosts"
    assert built.ldap is org.members[0]
    assert built.ldap.settings.bind_password == "service-secret"
    assert built.ldap.settings.ca_file == str(tmp_path / "ca.pem")
    secure = SaslContext(domain="guest.example.org", secure=True)
    assert built.service.mechanisms(secure) == ["ANONYMOUS"]
    assert built.service.mechanisms(SaslContext(domain="example.org", secure=True))[-1] == "PLAIN"
    assert built.warnings == []


def test_a_missing_password_file_or_ca_file_names_the_option(tmp_path: Path):
    cfg = config({"authenticators": ["ldap"], "ldap": {**LDAP, "bind_mode": "search", "search_base": "dc=x",
                                                       "bind_dn": "cn=svc", "bind_password_file": "nope"}},
                 source=str(tmp_path / "tigasepy.toml"))
    with pytest.raises(ConfigError) as info:
        ldap_settings(cfg)
    assert str(info.value).startswith("auth.ldap.bind_password_file: cannot read")
    cfg = config({"authenticators": ["ldap"], "ldap": {**LDAP, "ca_file": "missing.pem"}},
                 source=str(tmp_path / "tigasepy.toml"))
    with pytest.raises(ConfigError) as info:
        ldap_settings(cfg)
    assert str(info.value).startswith("auth.ldap.ca_file: no CA file at")


def test_relaxed_tls_is_warned_about(tmp_path: Path):
    cfg = config({"authenticators": ["ldap"],
                  "ldap": {**LDAP, "urls": ["ldap://127.0.0.1"], "starttls": False, "tls_verify": False}},
                 source=str(tmp_path / "tigasepy.toml"))
    built = build_authentication(cfg, Stores(), FakeReactor())
    assert len(built.warnings) == 2 and all(w.startswith("SECURITY:") for w in built.warnings)


def test_the_ldap_examples_in_the_docs_are_valid():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    section = docs[docs.index("### `[auth.ldap]`"):docs.index("## `[extensions.NAME]`")]
    blocks = [block.split("```", 1)[0] for block in section.split("```toml\n")[1:]]
    assert len(blocks) == 2
    full = tomllib.loads(blocks[0])
    cfg = config_from_dict(full)
    assert cfg.auth.chain_of("example.org") == ("ldap", "internal")
    assert cfg.auth.chain_of("guest.example.org") == () and cfg.auth.anonymous_on("guest.example.org")
    direct = tomllib.loads(blocks[1])
    cfg = config({"authenticators": ["ldap"], **direct["auth"]})
    assert cfg.auth.ldap.bind_mode == "direct" and cfg.auth.ldap.starttls
