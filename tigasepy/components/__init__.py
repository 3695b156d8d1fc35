"""Components: services addressed by their own domain, in-process or external (XEP-0114).

One ``[components]`` section configures them all:

- scalar options of ``[components]`` itself configure the XEP-0114 accept listener
  (``ComponentListenerConfig``);
- a ``[components.NAME]`` table with ``class`` and ``domain`` runs that class in-process;
- with ``external = true`` (no ``class``) the domain belongs to a component that connects
  to the accept listener and authenticates with ``secret`` or ``secret_file``;
- with ``class``, ``domain`` and ``connect = "host:port"`` (plus a secret) tigasepy runs
  the class as an external component of *another* server (``connector.py``).

``components_plan`` sorts the tables into those groups; nothing here opens a socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tigasepy.config import ConfigError, section_from_dict

#: Options of a ``[components.NAME]`` table that tigasepy reads itself; everything
#: else goes to the component class's ``config_type``.
RESERVED_OPTIONS = frozenset({"class", "domain", "external", "connect", "secret", "secret_file",
                              "tls", "ca_file"})


@dataclass(frozen=True)
class ComponentListenerConfig:
    """``[components]`` scalars: the XEP-0114 accept listener and its limits.

    The listener runs only when some ``[components.NAME]`` has ``external = true``.
    XEP-0114 streams are not encrypted: the default interface is loopback; use
    ``tls = true`` (direct TLS with the server's certificate) across a network.
    """

    interface: str = "127.0.0.1"
    port: int = 5347
    tls: bool = False
    stanza_size_limit_bytes: int = 1048576
    max_depth: int = 32
    handshake_timeout_s: int = 30
    keepalive_s: int = 60
    keepalive_timeout_s: int = 30
    max_unauthenticated: int = 100

    def validate(self, path: tuple[str, ...]) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError("must be a TCP port number (0 disables)", path + ("port",))
        for name, minimum in (("stanza_size_limit_bytes", 10000), ("max_depth", 4),
                              ("handshake_timeout_s", 1), ("keepalive_s", 0),
                              ("keepalive_timeout_s", 1), ("max_unauthenticated", 1)):
            if getattr(self, name) < minimum:
                raise ConfigError(f"must be >= {minimum}", path + (name,))


LISTENER_OPTIONS = frozenset(ComponentListenerConfig.__dataclass_fields__)


@dataclass(frozen=True)
class ExternalComponentConfig:
    """A domain served by a component that connects to our accept listener."""

    name: str
    domain: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class OutgoingComponentConfig:
    """A component class tigasepy runs as an external component of another server."""

    name: str
    cls: type
    domain: str
    config: Any
    host: str
    port: int
    secret: str = field(repr=False)
    tls: bool = False
    ca_file: str = ""


@dataclass(frozen=True)
class ComponentsPlan:
    """``[components]`` sorted: listener options, in-process, accepted and outgoing components."""

    listener: ComponentListenerConfig = field(default_factory=ComponentListenerConfig)
    local: tuple[tuple[type, str, Any], ...] = ()
    external: tuple[ExternalComponentConfig, ...] = ()
    outgoing: tuple[OutgoingComponentConfig, ...] = ()

    @property
    def domains(self) -> list[str]:
        """Every component domain of this plan."""
        return ([d for _c, d, _o in self.local] + [e.domain for e in self.external]
                + [o.domain for o in self.outgoing])


def check_components_section(section: Mapping[str, Any]) -> None:
    """Structural check of ``[components]`` at config load (classes are loaded later).

    Raises:
        ConfigError: a scalar that is no listener option, or a wrong listener value.
    """
    scalars = {}
    for key, value in section.items():
        if isinstance(value, Mapping):
            if key in LISTENER_OPTIONS:
                raise ConfigError(f"{key!r} is a listener option, not a component name", ("components", key))
            continue
        if key not in LISTENER_OPTIONS:
            raise ConfigError(f"unknown option {key!r} (a component is a [components.{key}] table)",
                              ("components", key))
        scalars[key] = value
    section_from_dict(ComponentListenerConfig, scalars, ("components",))


def read_secret_file(path: Path, where: tuple[str, ...]) -> str:
    """The secret in the first line of ``path`` (without the line end); never logged."""
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}", where) from None
    secret = line.rstrip("\r\n")
    if not secret:
        raise ConfigError(f"{path} holds no secret (its first line is empty)", where)
    return secret


def _secret(raw: dict[str, Any], path: tuple[str, ...], base_dir: Path | None) -> str:
    secret = raw.pop("secret", None)
    secret_file = raw.pop("secret_file", None)
    if (secret is None) == (secret_file is None):
        raise ConfigError("needs exactly one of secret or secret_file", path + ("secret",))
    if secret is not None:
        if not isinstance(secret, str) or not secret:
            raise ConfigError("must be a non-empty string", path + ("secret",))
        return secret
    if not isinstance(secret_file, str) or not secret_file:
        raise ConfigError("must be a file name", path + ("secret_file",))
    file = Path(secret_file)
    if not file.is_absolute() and base_dir is not None:
        file = base_dir / file
    return read_secret_file(file, path + ("secret_file",))


def _domain(raw: dict[str, Any], path: tuple[str, ...]) -> str:
    domain = raw.pop("domain", None)
    if not isinstance(domain, str) or not domain or "@" in domain or "/" in domain or " " in domain:
        raise ConfigError("needs a domain", path + ("domain",))
    return domain.lower()


def _component_class(raw: dict[str, Any], path: tuple[str, ...]) -> tuple[type, Any]:
    from tigasepy.extensions import load_class

    class_path = raw.pop("class", None)
    if not isinstance(class_path, str) or not class_path:
        raise ConfigError("needs class = 'module:Class'", path + ("class",))
    try:
        cls = load_class(class_path)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"cannot load {class_path!r}: {e}", path + ("class",)) from None
    config_type = getattr(cls, "config_type", None)
    if config_type is None:
        if raw:
            raise ConfigError(f"unknown option {sorted(raw)[0]!r}", path + (sorted(raw)[0],))
        return cls, None
    return cls, section_from_dict(config_type, raw, path)


def parse_host_port(value: Any, path: tuple[str, ...]) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:5347"`` for IPv6) as a pair."""
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError("must be 'host:port'", path)
    host, _, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError("must be 'host:port'", path)
    return host, int(port_text)


def components_plan(section: Mapping[str, Any], base_dir: Path | None = None) -> ComponentsPlan:
    """Sort ``[components]`` into listener options and the three kinds of components.

    Args:
        section: the raw ``[components]`` table.
        base_dir: the folder relative ``secret_file`` / ``ca_file`` names start from
            (the config file's folder).

    Raises:
        ConfigError: naming the offending option.
    """
    check_components_section(section)
    listener = section_from_dict(ComponentListenerConfig,
                                 {k: v for k, v in section.items() if not isinstance(v, Mapping)},
                                 ("components",))
    local, external, outgoing = [], [], []
    seen: dict[str, str] = {}
    for name, table in section.items():
        if not isinstance(table, Mapping):
            continue
        path = ("components", name)
        raw = dict(table)
        is_external = raw.pop("external", False)
        if not isinstance(is_external, bool):
            raise ConfigError("must be true or false", path + ("external",))
        connect = raw.pop("connect", None)
        domain = _domain(raw, path)
        if domain in seen:
            raise ConfigError(f"domain {domain} is also [components.{seen[domain]}]", path + ("domain",))
        seen[domain] = name
        if is_external:
            if connect is not None or "class" in raw:
                raise ConfigError("an external component has no class or connect (it connects to us)",
                                  path + ("external",))
            secret = _secret(raw, path, base_dir)
            if raw:
                raise ConfigError(f"unknown option {sorted(raw)[0]!r}", path + (sorted(raw)[0],))
            external.append(ExternalComponentConfig(name, domain, secret))
        elif connect is not None:
            host, port = parse_host_port(connect, path + ("connect",))
            secret = _secret(raw, path, base_dir)
            tls = raw.pop("tls", False)
            if not isinstance(tls, bool):
                raise ConfigError("must be true or false", path + ("tls",))
            ca_file = raw.pop("ca_file", "")
            if not isinstance(ca_file, str):
                raise ConfigError("must be a file name", path + ("ca_file",))
            if ca_file and base_dir is not None and not Path(ca_file).is_absolute():
                ca_file = str(base_dir / ca_file)
            cls, config = _component_class(raw, path)
            outgoing.append(OutgoingComponentConfig(name, cls, domain, config, host, port, secret, tls,
                                                    ca_file))
        else:
            for key in ("secret", "secret_file", "tls", "ca_file"):
                if key in raw:
                    raise ConfigError("only for external = true or connect components", path + (key,))
            cls, config = _component_class(raw, path)
            local.append((cls, domain, config))
    return ComponentsPlan(listener, tuple(local), tuple(external), tuple(outgoing))


def configured_components(tables: Mapping[str, Any]) -> list[tuple[type, str, Any]]:
    """The in-process components named in ``[components.NAME]`` tables: (class, domain, parsed config).

    Each table needs ``class = "package.module:Class"`` and ``domain``; the remaining
    options are parsed by the class's ``config_type`` (a dataclass) when it has one.
    Tables for external (XEP-0114) components are not included; see ``components_plan``.
    """
    return list(components_plan(tables).local)
