"""In-band registration per virtual host: ``[hosts."D"] registration`` and hosts authenticating with LDAP."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.support.sm_harness import FakeClientSession, RecordingRouter, condition, parse_xml
from tigasepy.config import ConfigError, config_from_dict
from tigasepy.extensions import extensions_for
from tigasepy.extensions.register import InBandRegistration
from tigasepy.sm.manager import SessionManager
from tigasepy.storage.factory import Stores
from tigasepy.storage.interfaces import IAccountStore
from tigasepy.storage.memory import MemoryAccountStore
from tigasepy.xmpp import namespaces as ns

_sync = SynchronousTestCase()
LDAP = {"urls": ["ldap://127.0.0.1:1"], "dn_template": "uid={user},ou=people,dc=example,dc=org"}


def _world(raw: dict):
    config = config_from_dict(raw)
    accounts = MemoryAccountStore()
    accounts.create("alice@corp.example", [])
    router = RecordingRouter()
    sm = SessionManager(config.server.domains, Stores({IAccountStore: accounts}), router, Clock(), config=config)
    router.local = sm
    for cls, ext_config in extensions_for(config):
        if cls is InBandRegistration:
            sm.load_extension(cls, ext_config)
    return sm, accounts


def _register(sm, domain: str, user: str = "bob") -> object:
    xml = (f"<iq type='set' id='r'><query xmlns='{ns.REGISTER}'><username>{user}</username>"
           "<password>pw-bob</password></query></iq>")
    return _sync.successResultOf(sm.unauthenticated_iq(domain, parse_xml(xml)))


def _offers_register(sm, domain: str) -> bool:
    return any(f.uri == ns.REGISTER_FEATURE for f in sm.features_for(domain, False))


def test_registration_refuses_any_username_on_a_host_authenticating_with_ldap():
    """A chain naming ldap: no registration (not-allowed), not even of a name the directory lacks."""
    sm, accounts = _world({
        "server": {"domains": ["corp.example", "guest.example"]},
        "auth": {"ldap": LDAP, "hosts": {"corp.example": {"authenticators": ["ldap", "internal"]}}},
        "extensions": {"register": {"enabled": True}},
    })
    for user in ("bob", "alice", "nobody-in-the-directory"):
        assert condition(_register(sm, "corp.example", user)) == "not-allowed"
    form = parse_xml(f"<iq type='get' id='f'><query xmlns='{ns.REGISTER}'/></iq>")
    assert condition(_sync.successResultOf(sm.unauthenticated_iq("corp.example", form))) == "not-allowed"
    assert not _offers_register(sm, "corp.example")
    assert not _sync.successResultOf(accounts.exists("bob@corp.example"))
    # The other host, internal accounts only, still registers.
    assert _register(sm, "guest.example")["type"] == "result"
    assert _offers_register(sm, "guest.example")


def test_password_change_in_band_is_refused_on_an_ldap_host():
    sm, _accounts = _world({
        "server": {"domains": ["corp.example"]},
        "auth": {"ldap": LDAP, "authenticators": ["ldap", "internal"]},
        "extensions": {"register": {"enabled": True}},
    })
    session = FakeClientSession()
    session.jid = sm.bind(session, "alice", "corp.example", "r")
    stanza = parse_xml(f"<iq type='set' id='p'><query xmlns='{ns.REGISTER}'><username>alice</username>"
                       "<password>new-password</password></query></iq>")
    stanza["from"] = session.jid.full()
    sm.receive(session, stanza)
    [reply] = session.take()
    assert condition(reply) == "not-allowed"


def test_registration_per_host_overrides_the_server_wide_setting():
    sm, _accounts = _world({
        "server": {"domains": ["closed.example", "open.example"]},
        "hosts": {"open.example": {"registration": True}},
    })
    assert _register(sm, "open.example")["type"] == "result"
    assert _offers_register(sm, "open.example")
    assert condition(_register(sm, "closed.example")) == "service-unavailable"
    assert not _offers_register(sm, "closed.example")

    sm, _accounts = _world({
        "server": {"domains": ["closed.example", "open.example"]},
        "extensions": {"register": {"enabled": True}},
        "hosts": {"closed.example": {"registration": False}},
    })
    assert _register(sm, "open.example")["type"] == "result"
    assert condition(_register(sm, "closed.example")) == "service-unavailable"


def test_hosts_config_is_checked():
    with pytest.raises(ConfigError, match=r"hosts\.other\.example: not a hosted domain"):
        config_from_dict({"server": {"domains": ["a.example"]}, "hosts": {"other.example": {}}})
    with pytest.raises(ConfigError, match=r"hosts\.a\.example\.registration: not with an authenticator"):
        config_from_dict({"server": {"domains": ["a.example"]}, "auth": {"ldap": LDAP, "authenticators": ["ldap"]},
                          "hosts": {"a.example": {"registration": True}}})
    with pytest.raises(ConfigError, match=r"hosts\.a\.example: certificate and private_key go together"):
        config_from_dict({"server": {"domains": ["a.example"]}, "hosts": {"a.example": {"certificate": "x.pem"}}})
    with pytest.raises(ConfigError, match=r"hosts\.a\.example\.colour: unknown option"):
        config_from_dict({"server": {"domains": ["a.example"]}, "hosts": {"a.example": {"colour": "red"}}})


def test_the_policy_follows_the_config_in_force():
    """A configuration reload replaces the SM's config; the next registration follows it."""
    raw = {"server": {"domains": ["closed.example", "open.example"]},
           "hosts": {"open.example": {"registration": True}}}
    sm, _accounts = _world(raw)
    assert condition(_register(sm, "closed.example")) == "service-unavailable"
    sm.config = config_from_dict({**raw, "hosts": {"open.example": {"registration": True},
                                                   "closed.example": {"registration": True}}})
    assert _register(sm, "closed.example")["type"] == "result"
    assert _offers_register(sm, "closed.example")
