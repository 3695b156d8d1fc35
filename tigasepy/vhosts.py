"""Virtual hosts added and removed at run time, through the configuration reload.

A reload (``tigasepy/reload.py``) whose ``[server] domains`` or ``[hosts."DOMAIN"]``
certificates changed calls ``plan_hosts`` before anything changes (errors refuse the
whole reload) and ``apply_hosts`` while applying it. For an added host: its route, the
session manager's domain list, its authenticator chain (``[auth]``, with its own
``[auth.hosts."DOMAIN"]`` entry), the TLS certificates (a generated certificate is made
anew to name it; a host's own one is served by SNI) and the extensions whose set of
served hosts changed (reloaded). For a removed host: its sessions end with the stream
error ``host-gone`` and the rest is undone; its accounts and their data stay in the store.
Sessions of the other hosts are not touched.

What stays restart-only: the first domain of the list (streams without a ``to`` use it),
and any change in a split deployment (connection managers keep their own domain list).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tigasepy.config import AuthConfig, Config, ConfigError
from tigasepy.log_level import Logger

if TYPE_CHECKING:
    from tigasepy.reload import ReloadReport
    from tigasepy.service import TigaseService

_log = Logger()

#: The ``_RESTART_ONLY`` parts of reload.py that a hosts plan applies instead.
APPLIED = ("[server] domains", "[hosts] certificates")


@dataclass
class HostsPlan:
    """What ``apply_hosts`` will do, prepared by ``plan_hosts``."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    tls: Any            # prepared contexts for tls.retarget, or None (certificates unchanged)


def _certificates(config: Config) -> dict[str, tuple[str, str]]:
    return {d: (h.certificate, h.private_key) for d, h in config.hosts.items() if h.certificate}


def comparable_auth(config: Config, plan: HostsPlan) -> AuthConfig:
    """``config.auth`` without the ``[auth.hosts]`` entries of hosts the plan adds or removes
    (those go with the host; any other ``[auth]`` change still needs a restart)."""
    moving = set(plan.added) | set(plan.removed)
    return dataclasses.replace(config.auth, hosts={d: h for d, h in config.auth.hosts.items() if d not in moving})


def auth_in_force(old: Config, new: Config, plan: HostsPlan) -> AuthConfig:
    """The ``[auth]`` to keep: the old one, with the entries of added hosts from ``new``."""
    hosts = {d: h for d, h in old.auth.hosts.items() if d not in plan.removed}
    hosts.update({d: h for d, h in new.auth.hosts.items() if d in plan.added})
    return dataclasses.replace(old.auth, hosts=hosts)


def plan_hosts(server: "TigaseService", old: Config, new: Config) -> HostsPlan | None:
    """The hosts a reload from ``old`` to ``new`` adds and removes, checked and prepared.

    Returns None when there is nothing to do or it cannot be done here (a process without
    the session manager, a split deployment, the first domain changed): the reload then
    reports ``[server] domains`` as needing a restart, as before.

    Raises:
        ConfigError: a new host clashes with a component, or its certificate cannot be used.
    """
    if old.server.domains == new.server.domains and _certificates(old) == _certificates(new):
        return None
    if server.sm is None or server.link is not None or server.remote_sm is not None:
        return None
    if old.server.domains[0] != new.server.domains[0]:
        return None
    added = tuple(d for d in new.server.domains if d not in old.server.domains)
    removed = tuple(d for d in old.server.domains if d not in new.server.domains)
    for domain in added:
        if server.router.serves(domain):
            raise ConfigError(f"{domain} is routed already (a component?)", ("server", "domains"))
    from tigasepy import tls

    plan = HostsPlan(added=added, removed=removed, tls=None)
    kept = dataclasses.replace(new, tls=old.tls, auth=auth_in_force(old, new, plan))
    plan.tls = tls.prepare_retarget(kept)
    if "ldap" in {name for d in added for name in kept.auth.chain_of(d)} and not kept.auth.ldap.urls:
        raise ConfigError('required when an authenticator chain names "ldap"', ("auth", "ldap", "urls"))
    return plan


def apply_hosts(server: "TigaseService", plan: HostsPlan, new: Config, report: "ReloadReport") -> None:
    """Apply ``plan`` (``new`` is the config in force from now on, ``server.sm.config`` set)."""
    from tigasepy import tls
    from tigasepy.router.router import LocalDelivery

    sm = server.sm
    tls.retarget(server.tls_context, plan.tls)
    for domain in plan.added:
        server.authentication.add_host(domain, new.auth)
        server.router.add_route(domain, LocalDelivery(domain, sm))
    sm.set_domains(new.server.domains)
    for domain in plan.removed:
        server.router.remove_route(domain)
        server.authentication.remove_host(domain)
        ended = 0
        for session in [s for s in sm.all_sessions() if s.jid.host == domain]:
            session.handle.close("host-gone", f"{domain} is no longer served here")
            ended += 1
        report.changes.append(f"host {domain} removed ({ended} session(s) ended; its accounts are kept)")
    for domain in plan.added:
        report.changes.append(f"host {domain} added")
        if getattr(server, "federation", None) is not None:
            # s2s keeps the TLS context it started with (tigasepy/s2s).
            report.restart.append(f"the federation (s2s) certificate for {domain}")
    if not plan.added and not plan.removed:
        report.changes.append("[hosts] certificates")


def reload_extensions_served_differently(server: "TigaseService", report: "ReloadReport") -> None:
    """Load again the extensions whose set of served hosts (``[hosts."DOMAIN"] extensions``,
    the hosts themselves) is not the one they were loaded with; run by every reload."""
    from tigasepy.extensions import hosts_without

    sm = server.sm
    for cls, config in list(server.extension_classes):
        loaded = sm.extensions.get(cls.name)
        if loaded is None:
            continue
        _extension, host = loaded
        if host.hidden_on == hosts_without(sm.config, cls.name):
            continue
        sm.unload_extension(cls.name)
        try:
            sm.load_extension(cls, config)
        except Exception as e:
            _log.failure("configuration reload: extension {name} could not be loaded", name=cls.name)
            report.changes.append(f"extension {cls.name} FAILED to load ({e})")
            continue
        report.changes.append(f"extension {cls.name} reloaded (served hosts)")
