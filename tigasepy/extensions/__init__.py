"""Built-in session-manager extensions, each registered through the public ``ExtensionHost`` API.

``BUILTIN`` names every built-in extension (``module:Class``) with whether it is
enabled when its ``[extensions.NAME]`` table does not say ``enabled``. Third-party
extensions are named by their dotted class path as the table key's ``class`` option.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping

from tigasepy.config import ConfigError, section_from_dict

BUILTIN: dict[str, tuple[str, bool]] = {
    "disco": ("tigasepy.extensions.disco:ServiceDiscovery", True),
    "session": ("tigasepy.extensions.session:LegacySession", True),
    "roster": ("tigasepy.extensions.roster:Roster", True),
    "presence": ("tigasepy.extensions.presence:Presence", True),
    "privacy": ("tigasepy.extensions.privacy:Privacy", True),
    "message": ("tigasepy.extensions.message:MessageDelivery", True),
    "offline": ("tigasepy.extensions.offline:OfflineMessages", True),
    "mam": ("tigasepy.extensions.mam:MessageArchive", True),
    "carbons": ("tigasepy.extensions.carbons:MessageCarbons", True),
    "ping": ("tigasepy.extensions.ping:Ping", True),
    "version": ("tigasepy.extensions.version:SoftwareVersion", True),
    "vcard": ("tigasepy.extensions.vcard:VCardTemp", True),
    "private": ("tigasepy.extensions.private:PrivateStorage", True),
    "pep": ("tigasepy.extensions.pep:PersonalEventing", True),
    "last": ("tigasepy.extensions.last:LastActivityExtension", True),
    "time": ("tigasepy.extensions.entity_time:EntityTime", True),
    "contact_addresses": ("tigasepy.extensions.contact_addresses:ContactAddresses", True),
    "adhoc": ("tigasepy.extensions.adhoc:AdhocCommands", True),
    "caps": ("tigasepy.extensions.caps:EntityCapabilities", True),
    "register": ("tigasepy.extensions.register:InBandRegistration", False),
}


def load_class(path: str) -> type:
    """Import ``module:Class`` (or ``module.Class``)."""
    module, sep, name = path.partition(":")
    if not sep:
        module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def enabled_extensions(tables: Mapping[str, Mapping[str, Any]]) -> list[tuple[type, Any]]:
    """The extension classes to load, in load order, each with its parsed config.

    Built-ins come first (in ``BUILTIN`` order) unless ``enabled = false``; every other
    ``[extensions.NAME]`` table must give ``class = "package.module:Class"``.
    """
    out = []
    names = list(BUILTIN) + [n for n in tables if n not in BUILTIN]
    for name in names:
        raw = dict(tables.get(name, {}))
        path = ("extensions", name)
        enabled = raw.pop("enabled", BUILTIN[name][1] if name in BUILTIN else True)
        if not isinstance(enabled, bool):
            raise ConfigError("must be true or false", path + ("enabled",))
        class_path = raw.pop("class", BUILTIN[name][0] if name in BUILTIN else None)
        if not enabled:
            continue
        if not class_path:
            raise ConfigError("an extension that is not built in needs class = 'module:Class'", path)
        try:
            cls = load_class(class_path)
        except (ImportError, AttributeError, ValueError) as e:
            raise ConfigError(f"cannot load {class_path!r}: {e}", path + ("class",)) from None
        config_type = getattr(cls, "config_type", None)
        if config_type is None:
            if raw:
                raise ConfigError(f"unknown option {sorted(raw)[0]!r}", path + (sorted(raw)[0],))
            config = None
        else:
            config = section_from_dict(config_type, raw, path)
        out.append((cls, config))
    return out


#: Extensions every virtual host needs: ``[hosts."DOMAIN"] extensions`` cannot switch them off.
CORE = ("disco", "session", "roster", "presence", "message")


def _enabled(tables: Mapping[str, Mapping[str, Any]], name: str) -> bool:
    default = BUILTIN[name][1] if name in BUILTIN else True
    return tables.get(name, {}).get("enabled", default) is True


def extensions_for(config: Any) -> list[tuple[type, Any]]:
    """``enabled_extensions`` of ``config.extensions``, with an extension loaded also when
    only some virtual hosts turn it on (``[hosts."DOMAIN"] extensions``, ``registration``).

    A loaded extension ignores the accounts of the hosts that have it off (``hosts_without``;
    ``register`` checks its own per-host policy, ``Config.registration_on``).
    """
    tables = dict(config.extensions)
    wanted = set()
    for host in config.hosts.values():
        if host.registration:
            wanted.add("register")
        wanted.update(name for name, on in host.extensions.items() if on)
    for name in wanted:
        table = dict(tables.get(name, {}))
        table["enabled"] = True
        tables[name] = table
    return enabled_extensions(tables)


def hosts_without(config: Any, name: str) -> frozenset[str]:
    """The hosted domains that do not serve the loaded extension ``name``: those whose
    ``[hosts."DOMAIN"] extensions`` say false, and, for an extension off in
    ``[extensions.NAME]``, those that do not say true. Empty without a config, and for
    ``register`` (per-host policy of its own)."""
    if config is None or name == "register" or not config.hosts:
        return frozenset()
    default = _enabled(config.extensions, name)
    return frozenset(domain for domain in config.server.domains
                     if not config.host(domain).extensions.get(name, default))


def check_host_extensions(config: Any, domain: str, path: tuple[str, ...]) -> None:
    """``[hosts."DOMAIN"] extensions`` names extensions that exist and may differ per host."""
    for name in config.host(domain).extensions:
        if name == "register":
            raise ConfigError('per host, registration is set with registration = true/false', path + (name,))
        if name in CORE:
            raise ConfigError("every host needs this extension", path + (name,))
        if name not in BUILTIN and name not in config.extensions:
            raise ConfigError("no such extension (neither built in nor an [extensions.NAME] table)",
                              path + (name,))


def defaults_of(config_type: type | None) -> dict[str, Any]:
    """The default option values of an extension config type (for docs)."""
    if config_type is None:
        return {}
    return {f.name: f.default for f in dataclasses.fields(config_type)}
