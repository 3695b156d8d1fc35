"""Configuration: one TOML file, one frozen dataclass per section, validated at load.

Errors name the option path (``c2s.stanza_size_limit_bytes: must be >= 10000``).
A reload builds a new ``Config``; nothing mutates a config in place.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import socket
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


class ConfigError(Exception):
    """The configuration is invalid; ``path`` names the offending option."""

    def __init__(self, message: str, path: tuple[str, ...] = ()) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{'.'.join(path)}: {message}" if path else message)


def _at_least(path: tuple[str, ...], value: int | float, minimum: int | float) -> None:
    if value < minimum:
        raise ConfigError(f"must be >= {minimum}", path)


def _port(path: tuple[str, ...], value: int, allow_zero: bool = True) -> None:
    if not (0 if allow_zero else 1) <= value <= 65535:
        raise ConfigError("must be a TCP port number (0 disables)" if allow_zero else "must be 1..65535", path)


#: The parts a process can run (``[server] roles``); all of them is the all-in-one default.
ROLES = ("c2s", "s2s", "sm")


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: the hosted domains, where data lives, and which parts this process runs.

    ``roles`` splits a deployment (ARCHITECTURE.md section 5): ``["c2s"]`` is a
    connection-manager process (DMZ: no stores, no credentials), ``["sm"]`` the session
    manager with storage and authentication, which dials the connection managers
    named in ``[link] connect``.
    """

    domains: tuple[str, ...] = ()
    data_dir: str = "data"
    admins: tuple[str, ...] = ()
    roles: tuple[str, ...] = ROLES
    log_level: str = "info"

    def validate(self, path: tuple[str, ...]) -> None:
        from tigasepy.log_level import LEVELS

        if self.log_level not in LEVELS:
            raise ConfigError(f"unknown log level {self.log_level!r} (known: {', '.join(LEVELS)})",
                              path + ("log_level",))
        if not self.domains:
            raise ConfigError("at least one domain is required", path + ("domains",))
        for domain in self.domains:
            if not domain or "@" in domain or "/" in domain:
                raise ConfigError(f"{domain!r} is not a domain name", path + ("domains",))
        if not self.roles:
            raise ConfigError(f"at least one of {', '.join(ROLES)}", path + ("roles",))
        for role in self.roles:
            if role not in ROLES:
                raise ConfigError(f"unknown role {role!r} (known: {', '.join(ROLES)})", path + ("roles",))
        if len(set(self.roles)) != len(self.roles):
            raise ConfigError("a role is named twice", path + ("roles",))


def parse_address(value: str, path: tuple[str, ...]) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:5347"`` for IPv6) as ``(host, port)``.

    Raises:
        ConfigError: not a host and a port 1..65535.
    """
    host, sep, port_text = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or any(c.isspace() for c in host) or not port_text.isdigit() \
            or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"{value!r} is not host:port", path)
    return host, int(port_text)


@dataclass(frozen=True)
class LinkConfig:
    """``[link]``: the TLS link between a session-manager process and connection managers.

    The session manager dials *out* to every ``connect`` address; a connection-manager
    process (``roles`` without ``sm``) listens on ``listen`` and never connects inward.
    Both ends prove knowledge of the shared secret in ``secret_file`` (HMAC challenge
    and response bound to the TLS channel, never the secret itself); ``peer_fingerprints``
    optionally pins the SHA-256 of the other end's certificate too.
    """

    listen: str = ""
    connect: tuple[str, ...] = ()
    secret_file: str = ""
    peer_fingerprints: tuple[str, ...] = ()
    grace_period_s: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    request_timeout_s: int = 30
    handshake_timeout_s: int = 10
    keepalive_s: int = 15
    max_queued: int = 20000
    max_frame_bytes: int = 1048576

    def validate(self, path: tuple[str, ...]) -> None:
        if self.listen:
            parse_address(self.listen, path + ("listen",))
        for address in self.connect:
            parse_address(address, path + ("connect",))
        if len(set(self.connect)) != len(self.connect):
            raise ConfigError("an address is named twice", path + ("connect",))
        for pin in self.peer_fingerprints:
            hexdigits = pin.replace(":", "").lower()
            if len(hexdigits) != 64 or any(c not in "0123456789abcdef" for c in hexdigits):
                raise ConfigError(f"{pin!r} is not a SHA-256 fingerprint (64 hex digits)",
                                  path + ("peer_fingerprints",))
        _at_least(path + ("grace_period_s",), self.grace_period_s, 0)
        if self.reconnect_min_s < 0.05:
            raise ConfigError("must be >= 0.05", path + ("reconnect_min_s",))
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ConfigError("must be >= reconnect_min_s", path + ("reconnect_max_s",))
        _at_least(path + ("request_timeout_s",), self.request_timeout_s, 1)
        _at_least(path + ("handshake_timeout_s",), self.handshake_timeout_s, 1)
        _at_least(path + ("keepalive_s",), self.keepalive_s, 1)
        _at_least(path + ("max_queued",), self.max_queued, 100)
        _at_least(path + ("max_frame_bytes",), self.max_frame_bytes, 65536)


@dataclass(frozen=True)
class StreamManagementConfig:
    """``[c2s.stream_management]``: XEP-0198 acks and resumption on client streams."""

    enabled: bool = True
    resume_timeout_s: int = 300
    location: str = ""
    max_unacked: int = 1000
    ack_request_every_stanzas: int = 10
    ack_request_every_s: int = 30
    ack_timeout_s: int = 60
    max_detached: int = 10000
    max_detached_per_account: int = 10

    def validate(self, path: tuple[str, ...]) -> None:
        _at_least(path + ("resume_timeout_s",), self.resume_timeout_s, 0)
        _at_least(path + ("max_unacked",), self.max_unacked, 10)
        _at_least(path + ("ack_request_every_stanzas",), self.ack_request_every_stanzas, 1)
        _at_least(path + ("ack_request_every_s",), self.ack_request_every_s, 1)
        _at_least(path + ("ack_timeout_s",), self.ack_timeout_s, 0)
        _at_least(path + ("max_detached",), self.max_detached, 1)
        _at_least(path + ("max_detached_per_account",), self.max_detached_per_account, 1)
        if any(c.isspace() for c in self.location):
            raise ConfigError("must be host or host:port", path + ("location",))


@dataclass(frozen=True)
class CsiConfig:
    """``[c2s.csi]``: XEP-0352 client state indication (batching while a client is inactive)."""

    enabled: bool = True
    max_buffered: int = 100

    def validate(self, path: tuple[str, ...]) -> None:
        _at_least(path + ("max_buffered",), self.max_buffered, 1)


@dataclass(frozen=True)
class C2SConfig:
    """``[c2s]``: client connections (RFC 6120), their security policy and limits."""

    interface: str = "0.0.0.0"
    port: int = 5222
    direct_tls_port: int = 5223
    tls_required: bool = True
    allow_plain_without_tls: bool = False
    stanza_size_limit_bytes: int = 262144
    max_depth: int = 32
    idle_timeout_s: int = 900
    auth_timeout_s: int = 60
    max_unauthenticated: int = 2000
    listen_backlog: int = 1024
    max_resources_per_account: int = 16
    max_auth_failures: int = 3
    stream_management: StreamManagementConfig = field(default_factory=StreamManagementConfig)
    csi: CsiConfig = field(default_factory=CsiConfig)

    def validate(self, path: tuple[str, ...]) -> None:
        self.stream_management.validate(path + ("stream_management",))
        self.csi.validate(path + ("csi",))
        _port(path + ("port",), self.port)
        _port(path + ("direct_tls_port",), self.direct_tls_port)
        _at_least(path + ("stanza_size_limit_bytes",), self.stanza_size_limit_bytes, 10000)
        _at_least(path + ("max_depth",), self.max_depth, 4)
        _at_least(path + ("idle_timeout_s",), self.idle_timeout_s, 1)
        _at_least(path + ("auth_timeout_s",), self.auth_timeout_s, 1)
        _at_least(path + ("max_unauthenticated",), self.max_unauthenticated, 1)
        _at_least(path + ("listen_backlog",), self.listen_backlog, 1)
        _at_least(path + ("max_resources_per_account",), self.max_resources_per_account, 1)
        _at_least(path + ("max_auth_failures",), self.max_auth_failures, 1)


@dataclass(frozen=True)
class TLSConfig:
    """``[tls]``: the certificate; empty paths mean ``<data_dir>/<domain>.crt/.key`` (generated).

    ``groups``: the key-exchange groups client connections may use, preferred first, as
    OpenSSL names them (``"X25519MLKEM768"``, ``"X25519"``, ``"P-256"``...); empty keeps
    OpenSSL's default list, which starts with the post-quantum hybrid X25519MLKEM768.
    """

    certificate: str = ""
    private_key: str = ""
    groups: tuple[str, ...] = ()

    def validate(self, path: tuple[str, ...]) -> None:
        if bool(self.certificate) != bool(self.private_key):
            raise ConfigError("certificate and private_key go together", path)
        for name in self.groups:
            if not name or ":" in name or any(c.isspace() for c in name):
                raise ConfigError(f"{name!r} is not a key-exchange group name", path + ("groups",))


def _check_domain_name(domain: str, path: tuple[str, ...]) -> None:
    if not domain or "@" in domain or "/" in domain or any(c.isspace() for c in domain) or ":" in domain:
        raise ConfigError(f"{domain!r} is not a domain name", path)


def parse_s2s_route(value: str, path: tuple[str, ...]) -> tuple[tuple[str, int, bool], ...]:
    """An ``[s2s.routes]`` value as ``((host, port, direct_tls), ...)``, in the order to try.

    The value lists targets separated by spaces or commas: ``"host:port"`` speaks
    STARTTLS, ``"tls://host:port"`` direct TLS (XEP-0368); IPv6 as ``"[::1]:5269"``.

    Raises:
        ConfigError: a target is malformed.
    """
    targets = []
    for item in value.replace(",", " ").split():
        direct_tls = item.startswith("tls://")
        address = item[len("tls://"):] if direct_tls else item
        if "://" in address:
            raise ConfigError(f"{item!r}: only tls:// may prefix a target", path)
        host, port = parse_address(address, path)
        targets.append((host, port, direct_tls))
    if not targets:
        raise ConfigError('needs at least one target, e.g. "127.0.0.1:5269" or "tls://host:5270"', path)
    return tuple(targets)


@dataclass(frozen=True)
class S2SConfig:
    """``[s2s]``: federation with other servers (RFC 6120 server-to-server streams).

    Incoming and outgoing streams use STARTTLS (``port``) or direct TLS
    (``direct_tls_port``, XEP-0368). A peer authenticates with SASL EXTERNAL when its
    certificate is valid for its domain (chain to ``ca_file`` or the system's CAs, name
    per RFC 6125), else with Server Dialback (XEP-0220) when ``dialback`` allows it.
    ``insecure_domains`` may federate without TLS; ``unverified_domains`` may use
    dialback even when ``dialback = false``. ``[s2s.routes]`` maps a domain to
    ``"host:port"`` targets (``"tls://host:port"`` for direct TLS) tried instead of DNS.
    """

    enabled: bool = True
    interface: str = "0.0.0.0"
    port: int = 5269
    direct_tls_port: int = 5270
    use_dns: bool = True
    tls_required: bool = True
    dialback: bool = True
    sasl_external: bool = True
    bidi: bool = True
    ca_file: str = ""
    insecure_domains: tuple[str, ...] = ()
    unverified_domains: tuple[str, ...] = ()
    routes: Mapping[str, str] = field(default_factory=dict)
    dialback_secret_file: str = ""
    idle_timeout_s: int = 600
    connect_timeout_s: int = 30
    max_connections_per_peer: int = 16
    max_unauthenticated: int = 500
    max_queued_stanzas: int = 1000
    stanza_size_limit_bytes: int = 524288
    unauthenticated_stanza_size_limit_bytes: int = 10000
    max_depth: int = 32

    def validate(self, path: tuple[str, ...]) -> None:
        _port(path + ("port",), self.port)
        _port(path + ("direct_tls_port",), self.direct_tls_port)
        for option in ("insecure_domains", "unverified_domains"):
            for domain in getattr(self, option):
                _check_domain_name(domain, path + (option,))
        for domain, value in self.routes.items():
            _check_domain_name(domain, path + ("routes",))
            parse_s2s_route(value, path + ("routes", domain))
        _at_least(path + ("idle_timeout_s",), self.idle_timeout_s, 1)
        _at_least(path + ("connect_timeout_s",), self.connect_timeout_s, 1)
        _at_least(path + ("max_connections_per_peer",), self.max_connections_per_peer, 1)
        _at_least(path + ("max_unauthenticated",), self.max_unauthenticated, 1)
        _at_least(path + ("max_queued_stanzas",), self.max_queued_stanzas, 1)
        _at_least(path + ("stanza_size_limit_bytes",), self.stanza_size_limit_bytes, 10000)
        _at_least(path + ("unauthenticated_stanza_size_limit_bytes",),
                  self.unauthenticated_stanza_size_limit_bytes, 4096)
        if self.unauthenticated_stanza_size_limit_bytes > self.stanza_size_limit_bytes:
            raise ConfigError("must be <= stanza_size_limit_bytes",
                              path + ("unauthenticated_stanza_size_limit_bytes",))
        _at_least(path + ("max_depth",), self.max_depth, 4)

    def route_targets(self, domain: str) -> tuple[tuple[str, int, bool], ...] | None:
        """The static targets of ``domain`` (``[s2s.routes]``), or None when it has none."""
        value = self.routes.get(domain)
        return None if value is None else parse_s2s_route(value, ("s2s", "routes", domain))


@dataclass(frozen=True)
class StorageConfig:
    """``[storage]``: the backend. SQLite in the data directory is the default.

    ``postgresql`` connects with ``dsn`` (a libpq connection string or URI) or with
    ``host``/``port``/``user``/``database``, never both; the password comes from
    ``password_file`` (relative to the config file's folder) or from libpq's own
    sources, never from this file.
    """

    backend: str = "sqlite"
    path: str = "tigasepy.sqlite"
    dsn: str = ""
    host: str = ""
    port: int = 0
    user: str = ""
    database: str = ""
    password_file: str = ""
    pool_min: int = 1
    pool_max: int = 5
    connect_timeout_s: int = 10

    #: The options that only ``backend = "postgresql"`` reads.
    POSTGRESQL_OPTIONS: typing.ClassVar[tuple[str, ...]] = (
        "dsn", "host", "port", "user", "database", "password_file", "pool_min", "pool_max",
        "connect_timeout_s")

    def validate(self, path: tuple[str, ...]) -> None:
        if self.backend not in ("sqlite", "memory", "postgresql"):
            raise ConfigError("must be 'sqlite', 'postgresql' or 'memory'", path + ("backend",))
        if self.backend != "postgresql":
            defaults = StorageConfig()
            for name in self.POSTGRESQL_OPTIONS:
                if getattr(self, name) != getattr(defaults, name):
                    raise ConfigError('only for backend = "postgresql"', path + (name,))
            return
        if self.dsn:
            for name in ("host", "port", "user", "database"):
                if getattr(self, name):
                    raise ConfigError("give either dsn or host/port/user/database, not both",
                                      path + (name,))
            self._validate_dsn(path + ("dsn",))
        elif not self.database:
            raise ConfigError('required for backend = "postgresql" (or give dsn)', path + ("database",))
        if self.port:
            _port(path + ("port",), self.port, allow_zero=False)
        _at_least(path + ("pool_min",), self.pool_min, 1)
        _at_least(path + ("pool_max",), self.pool_max, self.pool_min)
        _at_least(path + ("connect_timeout_s",), self.connect_timeout_s, 2)

    def _validate_dsn(self, path: tuple[str, ...]) -> None:
        try:
            from psycopg.conninfo import conninfo_to_dict
        except ImportError:
            raise ConfigError("the postgresql backend needs psycopg: pip install 'psycopg[binary]'",
                              path) from None
        try:
            params = conninfo_to_dict(self.dsn)
        except Exception:
            # No detail: libpq's message quotes the string, which may hold a secret.
            raise ConfigError("not a valid PostgreSQL connection string "
                              "(key=value pairs or a postgresql:// URI)", path) from None
        if "password" in params:
            raise ConfigError("must not contain the password; put it in password_file", path)


#: The authenticators a chain may name (``[auth] authenticators``), see tigasepy/auth/factory.py.
AUTHENTICATORS = ("internal", "ldap")


def _is_loopback_url(url: str) -> bool:
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host.lower() in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")


def _check_ldap_filter(text: str, path: tuple[str, ...], need_user: bool) -> None:
    if not (text.startswith("(") and text.endswith(")")) or text.count("(") != text.count(")"):
        raise ConfigError("must be an LDAP filter in parentheses, e.g. \"(uid={user})\"", path)
    if need_user and "{user}" not in text:
        raise ConfigError("must contain {user} (replaced by the escaped user name)", path)


@dataclass(frozen=True)
class LdapConfig:
    """``[auth.ldap]``: the directory the ``ldap`` authenticator binds to (PLAIN only).

    ``bind_mode = "direct"`` binds as ``dn_template`` with ``{user}`` replaced (RFC 4514
    escaped); ``"search"`` binds as ``bind_dn`` (password from ``bind_password_file``),
    finds the one entry matching ``search_filter`` (``{user}`` RFC 4515 escaped) under
    ``search_base`` and binds as it. ``group_dn`` / ``require_filter`` limit who may log
    in. Passwords cross the network only inside TLS (``ldaps://`` or ``starttls``), except
    to a loopback address.
    """

    urls: tuple[str, ...] = ()
    starttls: bool = True
    ca_file: str = ""
    tls_verify: bool = True
    bind_mode: str = "direct"
    dn_template: str = ""
    search_base: str = ""
    search_filter: str = "(&(objectClass=inetOrgPerson)(uid={user}))"
    bind_dn: str = ""
    bind_password_file: str = ""
    group_dn: str = ""
    group_member_attribute: str = "member"
    require_filter: str = ""
    connect_timeout_s: float = 5.0
    timeout_s: float = 10.0
    pool_size: int = 4

    def validate(self, path: tuple[str, ...]) -> None:
        if not self.urls:
            return  # not configured; [auth] checks that no chain names "ldap" then
        for url in self.urls:
            scheme, _, rest = url.partition("://")
            if scheme.lower() not in ("ldap", "ldaps") or not rest.strip("/"):
                raise ConfigError(f"{url!r} is not an ldap:// or ldaps:// URL", path + ("urls",))
            if scheme.lower() == "ldap" and not self.starttls and not _is_loopback_url(url):
                raise ConfigError(f"{url}: passwords would cross the network in clear text; "
                                  "use ldaps:// or starttls = true", path + ("starttls",))
        if self.bind_mode == "direct":
            if "{user}" not in self.dn_template or "=" not in self.dn_template:
                raise ConfigError('bind_mode = "direct" needs a DN with {user}, '
                                  'e.g. "uid={user},ou=people,dc=example,dc=org"', path + ("dn_template",))
        elif self.bind_mode == "search":
            if not self.search_base:
                raise ConfigError('required for bind_mode = "search"', path + ("search_base",))
            _check_ldap_filter(self.search_filter, path + ("search_filter",), need_user=True)
            if bool(self.bind_dn) != bool(self.bind_password_file):
                raise ConfigError("bind_dn and bind_password_file go together", path + ("bind_dn",))
        else:
            raise ConfigError('must be "direct" or "search"', path + ("bind_mode",))
        if self.require_filter:
            _check_ldap_filter(self.require_filter, path + ("require_filter",), need_user=False)
        if not self.group_member_attribute or not self.group_member_attribute.replace("-", "").isalnum():
            raise ConfigError("must be an attribute name (member, uniqueMember, memberUid)",
                              path + ("group_member_attribute",))
        if self.connect_timeout_s < 0.1:
            raise ConfigError("must be >= 0.1", path + ("connect_timeout_s",))
        if self.timeout_s < 0.1:
            raise ConfigError("must be >= 0.1", path + ("timeout_s",))
        _at_least(path + ("pool_size",), self.pool_size, 1)


@dataclass(frozen=True)
class AuthHostConfig:
    """``[auth.hosts."DOMAIN"]``: one virtual host's own chain (unset options follow ``[auth]``)."""

    authenticators: tuple[str, ...] | None = None
    anonymous: bool | None = None


def _check_chain(names: tuple[str, ...], anonymous: bool, path: tuple[str, ...]) -> None:
    for name in names:
        if name not in AUTHENTICATORS:
            raise ConfigError(f"unknown authenticator {name!r} (known: {', '.join(AUTHENTICATORS)})", path)
    if len(set(names)) != len(names):
        raise ConfigError("an authenticator is named twice", path)
    if not names and not anonymous:
        raise ConfigError("no authenticator and anonymous = false: nobody could log in", path)


@dataclass(frozen=True)
class AuthConfig:
    """``[auth]``: how credentials are stored and checked, and by which authenticators.

    ``authenticators`` is the ordered chain of every hosted domain (``internal``: accounts
    with SCRAM keys in the store; ``ldap``: ``[auth.ldap]``); ``anonymous`` adds SASL
    ANONYMOUS (XEP-0175); ``[auth.hosts."DOMAIN"]`` overrides both for one domain.
    """

    scram_iterations: int = 10000
    scram_hashes: tuple[str, ...] = ("SHA-1", "SHA-256")
    authenticators: tuple[str, ...] = ("internal",)
    anonymous: bool = False
    ldap: LdapConfig = field(default_factory=LdapConfig)
    hosts: Mapping[str, AuthHostConfig] = field(default_factory=dict)

    def validate(self, path: tuple[str, ...]) -> None:
        _at_least(path + ("scram_iterations",), self.scram_iterations, 4096)
        for name in self.scram_hashes:
            if name not in ("SHA-1", "SHA-256"):
                raise ConfigError(f"unknown hash {name!r}", path + ("scram_hashes",))
        if not self.scram_hashes:
            raise ConfigError("at least one hash is required", path + ("scram_hashes",))
        self.ldap.validate(path + ("ldap",))
        _check_chain(self.authenticators, self.anonymous, path + ("authenticators",))
        uses_ldap = "ldap" in self.authenticators
        for domain, host in self.hosts.items():
            where = path + ("hosts", domain)
            names = self.chain_of(domain)
            _check_chain(names, self.anonymous_on(domain), where + ("authenticators",))
            uses_ldap = uses_ldap or "ldap" in names
        if uses_ldap and not self.ldap.urls:
            raise ConfigError('required when an authenticator chain names "ldap"', path + ("ldap", "urls"))

    def validate_hosts(self, domains: tuple[str, ...], path: tuple[str, ...]) -> None:
        """Every ``[auth.hosts."DOMAIN"]`` must be a hosted domain."""
        for domain in self.hosts:
            if domain not in domains:
                raise ConfigError("not a hosted domain (server.domains)", path + ("hosts", domain))

    def chain_of(self, domain: str) -> tuple[str, ...]:
        """The ordered authenticator names of ``domain``."""
        host = self.hosts.get(domain)
        if host is not None and host.authenticators is not None:
            return host.authenticators
        return self.authenticators

    def anonymous_on(self, domain: str) -> bool:
        """True when ``domain`` offers SASL ANONYMOUS."""
        host = self.hosts.get(domain)
        if host is not None and host.anonymous is not None:
            return host.anonymous
        return self.anonymous


@dataclass(frozen=True)
class HostConfig:
    """``[hosts."DOMAIN"]``: one virtual host's own settings; unset ones follow the server's.

    ``registration``: in-band registration (XEP-0077) on this host; unset follows
    ``[extensions.register] enabled``. A host whose authenticator chain names ``ldap``
    never allows it (the directory owns the user names). ``certificate`` and
    ``private_key``: the host's own certificate (PEM files, relative to the config
    file's folder), presented to clients that ask for this name (TLS SNI); empty: the
    server's certificate (``[tls]``). ``extensions``: extension name -> whether this host
    serves it (unset: as ``[extensions.NAME] enabled`` says); an extension on for one
    host is loaded, and ignores the accounts of hosts that have it off. The host's
    authenticators are set in ``[auth.hosts."DOMAIN"]``.
    """

    registration: bool | None = None
    certificate: str = ""
    private_key: str = ""
    extensions: Mapping[str, bool] = field(default_factory=dict)

    def validate(self, path: tuple[str, ...]) -> None:
        if bool(self.certificate) != bool(self.private_key):
            raise ConfigError("certificate and private_key go together", path)


@dataclass(frozen=True)
class HttpUploadConfig:
    """``[http.upload]``: XEP-0363 HTTP File Upload, served by the component ``domain``."""

    enabled: bool = True
    domain: str = ""                 # empty: upload.<first hosted domain>
    storage_dir: str = "uploads"     # relative to data_dir
    max_file_size: int = 10 * 1024 * 1024
    quota_per_user: int = 100 * 1024 * 1024
    expiry_days: int = 30            # files are removed after this many days; 0: kept
    slot_lifetime_s: int = 300       # a PUT URL is valid this long
    allowed_content_types: tuple[str, ...] = ()   # empty: any type

    def validate(self, path: tuple[str, ...]) -> None:
        _at_least(path + ("max_file_size",), self.max_file_size, 1)
        _at_least(path + ("quota_per_user",), self.quota_per_user, 0)
        _at_least(path + ("expiry_days",), self.expiry_days, 0)
        _at_least(path + ("slot_lifetime_s",), self.slot_lifetime_s, 10)
        if self.domain:
            _check_domain_name(self.domain, path + ("domain",))


@dataclass(frozen=True)
class HttpConfig:
    """``[http]``: the web listener (RFC 7395 WebSocket, XEP-0206 BOSH, XEP-0363 upload,
    XEP-0156 host-meta). ``public_url`` is the base clients reach (behind a proxy too)."""

    enabled: bool = False
    interface: str = "0.0.0.0"
    port: int = 5280                 # plain HTTP; 0 disables
    tls_port: int = 5281             # HTTPS with the server certificate; 0 disables
    public_url: str = ""             # e.g. "https://example.org:5281"; empty: https://<domain>:<tls_port>
    behind_tls_proxy: bool = False   # plain-HTTP sessions count as secure (a TLS proxy in front)
    websocket_path: str = "/xmpp-websocket"
    bosh_path: str = "/http-bind"
    upload_path: str = "/upload"
    max_request_bytes: int = 65536   # BOSH bodies and other small requests
    websocket_max_frame_bytes: int = 262144
    websocket_ping_s: int = 60
    bosh_max_wait_s: int = 60
    bosh_max_hold: int = 1
    bosh_inactivity_s: int = 60
    bosh_max_pause_s: int = 120
    bosh_max_queued: int = 1000
    max_sessions: int = 10000
    upload: HttpUploadConfig = field(default_factory=HttpUploadConfig)

    def validate(self, path: tuple[str, ...]) -> None:
        self.upload.validate(path + ("upload",))
        _port(path + ("port",), self.port)
        _port(path + ("tls_port",), self.tls_port)
        for name in ("websocket_path", "bosh_path", "upload_path"):
            value = getattr(self, name)
            if not value.startswith("/") or value.count("/") != 1 or len(value) < 2:
                raise ConfigError("must be one path segment like \"/name\"", path + (name,))
        if len({self.websocket_path, self.bosh_path, self.upload_path, "/.well-known"}) != 4:
            raise ConfigError("the paths must differ", path)
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ConfigError("must start with http:// or https://", path + ("public_url",))
        _at_least(path + ("max_request_bytes",), self.max_request_bytes, 1024)
        _at_least(path + ("websocket_max_frame_bytes",), self.websocket_max_frame_bytes, 10000)
        _at_least(path + ("websocket_ping_s",), self.websocket_ping_s, 0)
        _at_least(path + ("bosh_max_wait_s",), self.bosh_max_wait_s, 1)
        _at_least(path + ("bosh_max_hold",), self.bosh_max_hold, 1)
        _at_least(path + ("bosh_inactivity_s",), self.bosh_inactivity_s, 5)
        _at_least(path + ("bosh_max_pause_s",), self.bosh_max_pause_s, 0)
        _at_least(path + ("bosh_max_queued",), self.bosh_max_queued, 10)
        _at_least(path + ("max_sessions",), self.max_sessions, 1)


@dataclass(frozen=True)
class Config:
    """The whole configuration. ``extensions`` and ``components`` keep each
    ``[extensions.NAME]`` / ``[components.NAME]`` table raw; the class's own
    ``config_type`` parses it when it is loaded. ``components`` also holds the scalar
    options of the XEP-0114 listener (``tigasepy.components.components_plan``)."""

    server: ServerConfig = field(default_factory=ServerConfig)
    c2s: C2SConfig = field(default_factory=C2SConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    s2s: S2SConfig = field(default_factory=S2SConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    extensions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    components: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    hosts: Mapping[str, HostConfig] = field(default_factory=dict)
    source: str = ""

    def host(self, domain: str) -> HostConfig:
        """The ``[hosts."DOMAIN"]`` settings of ``domain`` (all unset when it has no table)."""
        return self.hosts.get(domain) or HostConfig()

    def registration_on(self, domain: str, default: bool) -> bool:
        """True when in-band registration is allowed on ``domain``.

        ``default`` is the server-wide setting (``[extensions.register] enabled``); a
        host whose authenticator chain names ``ldap`` never allows registration.
        """
        if "ldap" in self.auth.chain_of(domain):
            return False
        own = self.host(domain).registration
        return default if own is None else own

    @property
    def data_path(self) -> Path:
        """The data directory (relative paths are relative to the config file's folder)."""
        data = Path(self.server.data_dir)
        if not data.is_absolute() and self.source:
            data = Path(self.source).parent / data
        return data

    def validate(self) -> "Config":
        """Check every section; returns self for chaining."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "validate"):
                value.validate((f.name,))
        self.auth.validate_hosts(self.server.domains, ("auth",))
        for domain, host in self.hosts.items():
            if domain not in self.server.domains:
                raise ConfigError("not a hosted domain (server.domains)", ("hosts", domain))
            if host.registration and "ldap" in self.auth.chain_of(domain):
                raise ConfigError("not with an authenticator chain naming ldap: the directory owns "
                                  "the user names", ("hosts", domain, "registration"))
            from tigasepy.extensions import check_host_extensions  # it imports this module

            check_host_extensions(self, domain, ("hosts", domain, "extensions"))
        self._validate_roles()
        if not isinstance(self.extensions, Mapping):
            raise ConfigError("must be a table", ("extensions",))
        return self


    def has_role(self, role: str) -> bool:
        """True when this process runs ``role`` (``[server] roles``)."""
        return role in self.server.roles

    def _validate_roles(self) -> None:
        link = self.link
        if self.has_role("sm"):
            if link.listen:
                raise ConfigError("only a connection-manager process (roles without \"sm\") listens "
                                  "for the link; the session manager connects out", ("link", "listen"))
        else:
            if link.connect:
                raise ConfigError('only the session-manager process (roles with "sm") connects',
                                  ("link", "connect"))
            if not link.listen:
                raise ConfigError('required without the "sm" role: where the session manager '
                                  'connects to, e.g. "127.0.0.1:5350"', ("link", "listen"))
            if self.has_role("s2s"):
                raise ConfigError('s2s runs in the session-manager process for now: give it '
                                  'roles = ["sm", "s2s"]', ("server", "roles"))


def _convert(value: Any, hint: Any, path: tuple[str, ...]) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError("must be true or false", path)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError("must be an integer", path)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError("must be a number", path)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError("must be a string", path)
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return section_from_dict(hint, value, path)
    if origin in (typing.Union, types.UnionType):
        (inner, *_more) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(value, inner, path)
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError("must be a table", path)
        _key_hint, value_hint = typing.get_args(hint)
        return {k: _convert(v, value_hint, path + (k,)) for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError("must be a list", path)
        (item_hint, *_rest) = typing.get_args(hint)
        return tuple(_convert(v, item_hint, path) for v in value)
    return value


def section_from_dict(cls: type, raw: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """Build the dataclass ``cls`` from a TOML table, rejecting unknown keys and wrong types.

    Calls the instance's ``validate(path)`` when it has one.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError("must be a table", path)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r}", path + (unknown[0],))
    kwargs = {k: _convert(v, hints[k], path + (k,)) for k, v in raw.items()}
    instance = cls(**kwargs)
    if hasattr(instance, "validate"):
        instance.validate(path)
    return instance


_SECTIONS = {"server": ServerConfig, "c2s": C2SConfig, "tls": TLSConfig, "s2s": S2SConfig,
             "storage": StorageConfig,
             "auth": AuthConfig, "link": LinkConfig, "http": HttpConfig}


def config_from_dict(raw: Mapping[str, Any], source: str = "") -> Config:
    """Build and validate a ``Config`` from parsed TOML."""
    unknown = sorted(set(raw) - set(_SECTIONS) - {"extensions", "components", "hosts"})
    if unknown:
        raise ConfigError("unknown section", (unknown[0],))
    sections = {name: section_from_dict(cls, raw.get(name, {}), (name,)) for name, cls in _SECTIONS.items()}
    extensions = raw.get("extensions", {})
    if not isinstance(extensions, Mapping) or any(not isinstance(v, Mapping) for v in extensions.values()):
        raise ConfigError("must be a table of [extensions.NAME] tables", ("extensions",))
    components = raw.get("components", {})
    if not isinstance(components, Mapping):
        raise ConfigError("must be a table of listener options and [components.NAME] tables", ("components",))
    from tigasepy.components import check_components_section  # it imports this module

    check_components_section(components)
    hosts = _convert(raw.get("hosts", {}), Mapping[str, HostConfig], ("hosts",))
    config = Config(extensions=dict(extensions), components=dict(components), hosts=hosts, source=source,
                    **sections)
    return config.validate()


def load_config(path: str | Path) -> Config:
    """Read and validate the TOML file at ``path``."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no config file at {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    return config_from_dict(raw, source=str(path.resolve()))


def default_domain() -> str:
    """The machine's fully qualified host name, the default XMPP domain."""
    # getfqdn() answers "localhost" when /etc/hosts lists the host name on a loopback
    # line; the host name itself is the better guess then.
    candidates = [socket.getfqdn(), socket.gethostname()]
    for name in candidates:
        name = (name or "").lower().rstrip(".")
        if name and not name.startswith("localhost") and name not in ("ip6-localhost", "ip6-loopback"):
            return name
    return "localhost"


def default_config_text(domain: str) -> str:
    """The commented config written on first start."""
    c2s = C2SConfig()
    return f"""\
# tigasepy configuration. Every option below shows its default; uncomment to change.
# Changes to this file apply on restart (or on reload where the docs say so).

[server]
# The XMPP domains this server hosts accounts for. The first one is the default.
domains = ["{domain}"]
# Where the database, the generated certificate and other state live
# (relative to this file's folder).
data_dir = "data"
# Bare JIDs allowed to use administrative commands.
# admins = ["admin@{domain}"]
# Which parts this process runs: all of them by default. A split deployment
# (docs/deployment.md) has a session manager (roles = ["sm", "s2s"], [link] connect)
# and connection managers for the DMZ (roles = ["c2s"], [link] listen).
# roles = ["c2s", "s2s", "sm"]
# What the log shows: "debug" (every login, every database interaction), "info",
# "warn", "error" or "critical". A reload applies it.
# log_level = "info"

# [link]                            # split deployments only, see docs/configuration.md
# listen = "10.0.1.5:5350"          # a connection manager: where the session manager connects
# connect = ["10.0.1.5:5350"]       # the session manager: its connection managers
# secret_file = ""                  # empty: <data_dir>/link-secret (the SM writes it; copy it to each CM)
# grace_period_s = 30               # a broken link keeps sessions and queues stanzas this long

[c2s]
# interface = "{c2s.interface}"
# port = {c2s.port}                      # STARTTLS (RFC 6120); 0 disables
# direct_tls_port = {c2s.direct_tls_port}           # direct TLS (XEP-0368); 0 disables
# tls_required = {str(c2s.tls_required).lower()}            # refuse SASL before STARTTLS
# allow_plain_without_tls = {str(c2s.allow_plain_without_tls).lower()} # lab/benchmark only: offers PLAIN on plain text
# stanza_size_limit_bytes = {c2s.stanza_size_limit_bytes}
# max_depth = {c2s.max_depth}
# idle_timeout_s = {c2s.idle_timeout_s}
# auth_timeout_s = {c2s.auth_timeout_s}
# max_unauthenticated = {c2s.max_unauthenticated}
# listen_backlog = {c2s.listen_backlog}            # pending TCP connects the kernel queues (login storms)
# max_resources_per_account = {c2s.max_resources_per_account}
# max_auth_failures = {c2s.max_auth_failures}

[c2s.stream_management]
# XEP-0198: acks, and resumption of a session whose connection dropped.
# enabled = {str(c2s.stream_management.enabled).lower()}
# resume_timeout_s = {c2s.stream_management.resume_timeout_s}           # 0: acks only, no resumption
# location = ""                     # host:port clients should reconnect to (optional)
# max_unacked = {c2s.stream_management.max_unacked}               # beyond it the stream ends (policy-violation)
# ack_request_every_stanzas = {c2s.stream_management.ack_request_every_stanzas}
# ack_request_every_s = {c2s.stream_management.ack_request_every_s}
# ack_timeout_s = {c2s.stream_management.ack_timeout_s}              # an unanswered ack request drops the connection; 0: never
# max_detached = {c2s.stream_management.max_detached}             # sessions waiting for resumption, server-wide
# max_detached_per_account = {c2s.stream_management.max_detached_per_account}

[c2s.csi]
# XEP-0352: while a client says it is inactive, hold back presence updates and chat states.
# enabled = {str(c2s.csi.enabled).lower()}
# max_buffered = {c2s.csi.max_buffered}

[http]
# Web clients (docs/configuration.md): XMPP over WebSocket (RFC 7395), BOSH (XEP-0206),
# HTTP File Upload (XEP-0363, component upload.{domain}) and /.well-known/host-meta.
# enabled = false
# port = 5280                       # plain HTTP; WebSocket/BOSH there only with behind_tls_proxy
# tls_port = 5281                   # HTTPS with the certificate of [tls]
# public_url = ""                   # the base clients are given, e.g. "https://{domain}:5281"
# behind_tls_proxy = false          # a TLS-terminating proxy forwards to the plain port

[http.upload]
# max_file_size = 10485760
# quota_per_user = 104857600
# expiry_days = 30

[tls]
# Empty means <data_dir>/<domain>.crt and .key, self-signed and generated on first start.
# certificate = "/etc/ssl/certs/{domain}.pem"
# private_key = "/etc/ssl/private/{domain}.key"
# groups = []                       # key exchange, preferred first; [] = OpenSSL's default
#                                   # (X25519MLKEM768 first, ~8 KiB more per connection than
#                                   # ["X25519", "P-256"]: docs/performance.md)

[s2s]
# Federation with other XMPP servers (docs/configuration.md, [s2s]).
# enabled = true
# interface = "0.0.0.0"
# port = 5269                       # STARTTLS; 0: no listener
# direct_tls_port = 5270            # direct TLS (XEP-0368); 0 disables
# use_dns = true                    # SRV and A/AAAA lookups; false: only [s2s.routes]
# tls_required = true
# dialback = true                   # Server Dialback for peers without a valid certificate
# sasl_external = true              # SASL EXTERNAL for peers with one
# bidi = true                       # XEP-0288 bidirectional streams
# ca_file = ""                      # CAs peer certificates must chain to; empty: the system's
# insecure_domains = []             # peers allowed without TLS
# unverified_domains = []           # peers allowed to use dialback when dialback = false
# dialback_secret_file = ""         # empty: <data_dir>/s2s-dialback-secret, generated
# idle_timeout_s = 600
# connect_timeout_s = 30
# max_connections_per_peer = 16
# max_unauthenticated = 500
# max_queued_stanzas = 1000
# stanza_size_limit_bytes = 524288
# unauthenticated_stanza_size_limit_bytes = 10000
# max_depth = 32
# [s2s.routes]                      # static routes instead of DNS
# "partner.example" = "10.1.2.3:5269"

[storage]
# backend = "sqlite"                # or "postgresql", or "memory" (tests and benchmarks: nothing is kept)
# path = "tigasepy.sqlite"          # sqlite: relative to data_dir
# PostgreSQL only: either dsn or host/port/user/database; the password only from a file.
# dsn = ""                          # e.g. "host=db.example.org dbname=tigasepy user=tigasepy sslmode=verify-full"
# host = ""                         # e.g. "db.example.org"; empty: libpq's default
# port = 0                          # 0: libpq's default (5432)
# user = ""                         # e.g. "tigasepy"
# database = ""                     # e.g. "tigasepy"
# password_file = ""                # e.g. "/etc/tigasepy/db-password": its first line; relative to this file's folder
# pool_min = 1                      # connections kept open
# pool_max = 5                      # connections at most
# connect_timeout_s = 10

[auth]
# scram_iterations = 10000
# scram_hashes = ["SHA-1", "SHA-256"]
# Who checks passwords, in order: "internal" (accounts in the store, SCRAM and PLAIN)
# and "ldap" ([auth.ldap] below, PLAIN over TLS only). The first that accepts wins.
# authenticators = ["internal"]
# anonymous = false                 # SASL ANONYMOUS (XEP-0175): temporary random accounts
# One virtual host may differ:
# [auth.hosts."guest.{domain}"]
# authenticators = []
# anonymous = true

# [auth.ldap]                       # see docs/configuration.md for a worked example
# urls = ["ldaps://ldap.example.org"]
# starttls = true                   # for ldap:// URLs
# ca_file = ""                      # PEM CA bundle; empty: the system's CAs
# tls_verify = true
# bind_mode = "direct"              # or "search"
# dn_template = "uid={{user}},ou=people,dc=example,dc=org"
# search_base = ""                  # search mode: e.g. "ou=people,dc=example,dc=org"
# search_filter = "(&(objectClass=inetOrgPerson)(uid={{user}}))"
# bind_dn = ""                      # search mode: the service account, e.g. "cn=xmpp,ou=services,dc=example,dc=org"
# bind_password_file = ""           # its password: the file's first line
# group_dn = ""                     # only members of this group may log in
# group_member_attribute = "member" # or "uniqueMember"; "memberUid" holds the user name
# require_filter = ""               # the user's entry must match this filter too
# connect_timeout_s = 5.0
# timeout_s = 10.0                  # a login the directory has not answered by then fails (temporary-auth-failure)
# pool_size = 4                     # connections (and threads) used at most

# Components: [components.NAME] tables with class + domain run in-process; with
# external = true (+ secret_file) a component connects here over XEP-0114. See docs/components.md.
# [components]
# interface = "127.0.0.1"           # the XEP-0114 listener (loopback: its streams are not encrypted)
# port = 5347                       # runs only when some component has external = true
# [components.helpdesk]
# external = true
# domain = "helpdesk.{domain}"
# secret_file = "helpdesk.secret"   # its first line; relative to this file's folder
# Multi-User Chat (XEP-0045) in-process, rooms at ROOM@conference.{domain} (docs/components.md):
# [components.muc]
# class = "tigasepy.components.muc:MultiUserChat"
# domain = "conference.{domain}"
# max_rooms = 1000
# max_occupants = 200

# Virtual hosts: a table per hosted domain that differs from the rest (docs/configuration.md).
# `tigasepy host add/del` edits the domains list above; a reload applies it.
# [hosts."guest.{domain}"]
# registration = true               # in-band registration on this host only
# certificate = ""                  # its own certificate, served by SNI
# private_key = ""
# extensions = {{ mam = false }}      # extensions this host does (not) serve

# Extensions: each [extensions.NAME] table takes `enabled` plus the extension's options.
[extensions.register]
# In-band registration (XEP-0077): anyone can create an account when enabled.
enabled = false
"""
