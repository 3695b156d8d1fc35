"""Build the authentication side of the server from ``[auth]``: per-host chains and the service.

Each hosted domain gets an ``AuthenticatorChain`` of the authenticators its
``authenticators`` list names, in order (``internal``, ``ldap``), plus
``AnonymousAuthenticator`` at the end where ``anonymous`` is on. Authenticators are
shared between hosts (one LDAP connection pool, one internal authenticator).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from tigasepy.auth.anonymous import AnonymousAccounts, AnonymousAuthenticator
from tigasepy.auth.chain import AuthenticatorChain
from tigasepy.auth.internal import InternalAuthenticator
from tigasepy.auth.plain import in_thread_pool
from tigasepy.auth.server_secret import load_or_create_secret
from tigasepy.auth.service import AuthenticationService
from tigasepy.config import Config, ConfigError
from tigasepy.log_level import Logger
from tigasepy.storage.interfaces import IAccountStore

_log = Logger()


@dataclass
class Authentication:
    """What ``build_authentication`` made; the service tree keeps it."""

    service: AuthenticationService
    chains: dict[str, AuthenticatorChain]
    anonymous: AnonymousAccounts
    ldap: Any = None
    warnings: list[str] = field(default_factory=list)
    #: Builds the chain of a domain (``chain_for(domain, auth_config)``): virtual hosts added at run time.
    chain_for: Any = None

    def add_host(self, domain: str, auth: Any) -> None:
        """Give ``domain`` its chain (``auth``: the ``[auth]`` config with its ``[auth.hosts]`` entry)."""
        chain = self.chain_for(domain, auth)
        self.chains[domain] = chain
        self.service.set_authenticator(domain, chain)
        if self.ldap is None and "ldap" in chain.names:
            self.ldap = chain.members[chain.names.index("ldap")]

    def remove_host(self, domain: str) -> None:
        """Stop authenticating ``domain``'s accounts."""
        self.chains.pop(domain, None)
        self.service.remove_authenticator(domain)

    def attach(self, sm: Any) -> None:
        """Let anonymous accounts end with their last session on ``sm``."""
        self.anonymous.attach(sm)

    def close(self) -> "defer.Deferred[None]":
        """Close the directory connections (on shutdown); never fails."""
        self.anonymous.detach()
        if self.ldap is None:
            return defer.succeed(None)
        d = defer.maybeDeferred(self.ldap.close)
        return d.addErrback(lambda f: _log.failure("closing the LDAP connections failed", f))


def ldap_settings(config: Config) -> Any:
    """``LdapSettings`` for ``[auth.ldap]``: the password file read, the CA file resolved.

    Raises:
        ConfigError: a file cannot be read, or ldap3 is not installed.
    """
    from tigasepy.auth.ldap import LdapSettings
    from tigasepy.storage.factory import config_relative, read_password_file

    ldap = config.auth.ldap
    where = ("auth", "ldap")
    try:
        importlib.util.find_spec("ldap3").loader  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        raise ConfigError("the ldap authenticator needs ldap3: pip install ldap3", where) from None
    password = ""
    if ldap.bind_password_file:
        try:
            password = read_password_file(config_relative(config, ldap.bind_password_file))
        except ConfigError as e:
            raise ConfigError(e.message, where + ("bind_password_file",)) from None
    ca_file = ""
    if ldap.ca_file:
        path = config_relative(config, ldap.ca_file)
        if not path.is_file():
            raise ConfigError(f"no CA file at {path}", where + ("ca_file",))
        ca_file = str(path)
    return LdapSettings.from_config(ldap, bind_password=password, ca_file=ca_file)


def build_authentication(config: Config, stores: Any, reactor: Any) -> Authentication:
    """The ``AuthenticationService`` with one chain per hosted domain.

    Args:
        config: the whole configuration.
        stores: the store registry (``.get(IAccountStore)``).
        reactor: for the thread pool, timers and time.
    """
    auth = config.auth
    accounts = stores.get(IAccountStore)
    run_blocking = in_thread_pool(reactor)
    built: dict[str, Any] = {}
    warnings: list[str] = []

    def authenticator(name: str) -> Any:
        if name in built:
            return built[name]
        if name == "internal":
            built[name] = InternalAuthenticator(
                accounts, hashes=auth.scram_hashes, fake_iterations=auth.scram_iterations,
                run_blocking=run_blocking, secret=load_or_create_secret(config.data_path / "server-secret"))
        elif name == "ldap":
            from tigasepy.auth.ldap import LdapAuthenticator, security_warnings

            settings = ldap_settings(config)
            warnings.extend(security_warnings(settings))
            built[name] = LdapAuthenticator(settings, reactor, run_blocking, accounts=accounts)
        else:  # config validation names the known ones
            raise ConfigError(f"unknown authenticator {name!r}", ("auth", "authenticators"))
        return built[name]

    anonymous = AnonymousAccounts(reactor)
    anonymous_authenticator = AnonymousAuthenticator(anonymous)

    def chain_for(domain: str, auth: Any) -> AuthenticatorChain:
        names = list(auth.chain_of(domain))
        members = [authenticator(name) for name in names]
        if auth.anonymous_on(domain):
            names.append("anonymous")
            members.append(anonymous_authenticator)
        return AuthenticatorChain(members, names)

    chains: dict[str, AuthenticatorChain] = {domain: chain_for(domain, auth) for domain in config.server.domains}
    service = AuthenticationService(chains, allow_plain_without_tls=config.c2s.allow_plain_without_tls)
    return Authentication(service=service, chains=chains, anonymous=anonymous, ldap=built.get("ldap"),
                          warnings=warnings, chain_for=chain_for)
