"""Dynamic reconfiguration: apply a new ``Config`` to a running ``TigaseService``.

A reload (SIGHUP in ``tap.py``, the admin "reload configuration" command, or
``TigaseService.reload`` in code) builds a new ``Config`` (an invalid file is refused
before anything changes), compares it with the one in force and applies the
differences, leaving every session the change does not concern alone:

- ``[c2s]`` limits: new streams get them; open streams take the stanza size and depth
  limits, the idle timeout and the XEP-0198 / CSI settings at once. A changed port or
  interface moves the listener (open streams stay connected); port 0 removes it.
- ``[extensions]``: an extension switched off is unloaded (the host undoes its handlers,
  disco features, stream features), one switched on is loaded, one whose options or
  class changed is unloaded and loaded again. Connection managers get the new stream
  features and mechanisms over the link.
- ``[components]``: in-process components added, removed or replaced; external
  (XEP-0114) components through the accept listener's own ``reconfigure``.
- ``[link]``: connection managers added to or removed from ``connect``; timeouts,
  grace period and limits.
- ``[server] admins``, ``[server] log_level`` and anything extensions read from the
  config at use.

- ``[server] domains`` and ``[hosts."DOMAIN"]``: virtual hosts added or removed, host
  certificates, extensions served per host (``tigasepy/vhosts.py``); other hosts'
  sessions are not touched.

What a reload cannot change in place (roles, the first domain and any domain change in a
split deployment, the data directory, storage, authentication other than the
``[auth.hosts]`` entry of a host being added, ``[tls]``, the link listener, outgoing
component connections) is kept as it was and listed in the report as needing a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tigasepy.config import Config, ConfigError
from tigasepy.log_level import Logger, set_log_level

if TYPE_CHECKING:
    from tigasepy.service import TigaseService

_log = Logger()

#: Config parts a reload leaves alone: ``(description, getter)``.
_RESTART_ONLY = (
    ("[server] roles", lambda c: c.server.roles),
    ("[server] domains", lambda c: c.server.domains),
    ("[server] data_dir", lambda c: c.data_path),
    ("[storage]", lambda c: c.storage),
    ("[auth]", lambda c: c.auth),
    ("[tls]", lambda c: c.tls),
    ("[hosts] certificates", lambda c: {d: (h.certificate, h.private_key)
                                         for d, h in getattr(c, "hosts", {}).items()}),
    ("[link] listen / secret_file / peer_fingerprints",
     lambda c: (c.link.listen, c.link.secret_file, c.link.peer_fingerprints)),
    ("[c2s] allow_plain_without_tls", lambda c: c.c2s.allow_plain_without_tls),
    ("[s2s]", lambda c: c.s2s),
)


@dataclass
class ReloadReport:
    """What a reload did: ``changes`` applied, settings that need a ``restart``, an ``error``."""

    changes: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the new configuration was accepted."""
        return self.error is None

    def summary(self) -> str:
        """One line for logs and the admin command."""
        if self.error is not None:
            return f"reload refused, nothing changed: {self.error}"
        parts = [", ".join(self.changes) if self.changes else "no changes"]
        if self.restart:
            parts.append("needs a restart to change: " + ", ".join(self.restart))
        return "; ".join(parts)


def apply_reload(server: "TigaseService", new: Config) -> ReloadReport:
    """Apply ``new`` to ``server``; see the module docstring. Never raises."""
    old = server.config
    report = ReloadReport()
    try:
        plan = _prepare(server, old, new)
    except ConfigError as e:
        _log.error("configuration reload refused, nothing changed: {error}", error=str(e))
        return ReloadReport(error=str(e))
    from tigasepy import vhosts

    hosts = plan.get("hosts")     # virtual hosts added/removed in place (tigasepy/vhosts.py)
    for what, get in _RESTART_ONLY:
        if hosts is not None and what in vhosts.APPLIED:
            continue
        if hosts is not None and what == "[auth]":
            if vhosts.comparable_auth(old, hosts) != vhosts.comparable_auth(new, hosts):
                report.restart.append(what)
            continue
        if get(old) != get(new):
            report.restart.append(what)
    # What needs a restart keeps its old value in the config in force.
    import dataclasses

    domains = new.server.domains if hosts is not None else old.server.domains
    auth = vhosts.auth_in_force(old, new, hosts) if hosts is not None else old.auth
    kept = dataclasses.replace(new, server=dataclasses.replace(new.server, roles=old.server.roles,
                                                               domains=domains,
                                                               data_dir=old.server.data_dir),
                               storage=old.storage, auth=auth, tls=old.tls, s2s=old.s2s)
    if hosts is None:
        # Host certificates apply with the hosts; without a hosts plan they stay as they were.
        kept = dataclasses.replace(kept, hosts={d: dataclasses.replace(
            h, certificate=old.host(d).certificate, private_key=old.host(d).private_key)
            for d, h in kept.hosts.items()})
    server.config = kept
    _apply_c2s(server, old, kept, report)
    if server.sm is not None:
        server.sm.config = kept
        server.sm.max_resources = kept.c2s.max_resources_per_account
        if hosts is not None:
            vhosts.apply_hosts(server, hosts, kept, report)
        _apply_extensions(server, plan["extensions"], report)
        vhosts.reload_extensions_served_differently(server, report)
        _apply_components(server, plan, report)
    if server.link is not None:
        report.changes.extend(server.link.reconfigure(kept))
    elif kept.link.connect and server.sm is not None:
        report.restart.append("[link] connect (this process started without a link)")
    if server.remote_sm is not None and old.link != kept.link:
        server.remote_sm.reconfigure(kept.link)
        report.changes.append("[link] limits")
    if server.link is not None:
        server.link.push_features()
    if old.server.admins != kept.server.admins:
        report.changes.append("[server] admins")
    if old.server.log_level != kept.server.log_level:
        set_log_level(kept.server.log_level)
        report.changes.append(f"[server] log_level = {kept.server.log_level}")
    for line in report.restart:
        _log.warn("configuration reload: {what} changed; restart to apply it", what=line)
    _log.info("configuration reloaded: {summary}", summary=report.summary())
    return report


def _prepare(server: "TigaseService", old: Config, new: Config) -> dict[str, Any]:
    """Everything that can fail, before anything changes (ConfigError for a bad config)."""
    plan: dict[str, Any] = {"extensions": None, "components": None}
    if server.sm is None:
        return plan
    from tigasepy.components import components_plan
    from tigasepy.extensions import extensions_for

    from tigasepy.vhosts import plan_hosts

    plan["hosts"] = plan_hosts(server, old, new)
    plan["extensions"] = extensions_for(new)
    components = components_plan(new.components, Path(new.source).parent if new.source else None)
    for domain in components.domains:
        if server.sm.is_local_domain(domain):
            raise ConfigError(f"{domain} is a hosted domain, not a component domain", ("components",))
    plan["components"] = components
    try:
        before = components_plan(old.components, Path(old.source).parent if old.source else None)
        plan["old_outgoing"] = {(o.domain, o.host, o.port) for o in before.outgoing}
    except ConfigError:
        plan["old_outgoing"] = set()
    return plan


# -- c2s ------------------------------------------------------------------------------------

def _apply_c2s(server: "TigaseService", old: Config, new: Config, report: ReloadReport) -> None:
    if not new.has_role("c2s"):
        return
    if old.c2s != new.c2s:
        for factory in server.c2s_factories:
            factory.reconfigure(new.c2s)
        server.c2s_resumption.config = new.c2s.stream_management
        changed = [f.name for f in _fields(old.c2s) if getattr(old.c2s, f.name) != getattr(new.c2s, f.name)]
        report.changes.append("[c2s] " + ", ".join(changed))
    for name, direct_tls, port_of in (("c2s", False, lambda c: c.port),
                                      ("c2s-direct-tls", True, lambda c: c.direct_tls_port)):
        before = (port_of(old.c2s), old.c2s.interface)
        after = (port_of(new.c2s), new.c2s.interface)
        if before == after:
            continue
        _move_listener(server, name, direct_tls, new, report)


def _fields(obj: Any) -> Any:
    import dataclasses

    return dataclasses.fields(obj)


def _move_listener(server: "TigaseService", name: str, direct_tls: bool, new: Config,
                   report: ReloadReport) -> None:
    """Stop the listener ``name`` (its open streams stay) and start it on the new address."""
    from tigasepy.service import ListenerService

    existing = next((l for l in server.listeners if l.name == name), None)
    factory = existing.factory if existing is not None else None
    if existing is not None:
        server.listeners.remove(existing)
        if existing.running:
            existing.stopService()
    port = new.c2s.direct_tls_port if direct_tls else new.c2s.port
    if not port:
        report.changes.append(f"{name} listener removed")
        return
    if factory is None:
        factory = _new_c2s_factory(server, direct_tls)
    listener = ListenerService(name, server.c2s_endpoint(new.c2s, direct_tls=direct_tls), factory)
    server.listeners.append(listener)
    if server.running:
        listener.startService()
    report.changes.append(f"{name} listener on {new.c2s.interface}:{port}")


def _new_c2s_factory(server: "TigaseService", direct_tls: bool) -> Any:
    """A factory for a listener that did not exist (its port was 0), like its sibling's."""
    from tigasepy import tls

    sibling = server.c2s_factories[0] if server.c2s_factories else None
    if sibling is None:
        raise ConfigError("a c2s listener cannot be added to a process that started without one",
                          ("c2s", "port"))
    kwargs: dict[str, Any] = dict(config=server.config.c2s, sm=sibling.sm, auth=sibling.auth,
                                  clock=server.reactor, tls_context=server.tls_context,
                                  channel_binding=tls.channel_binding,
                                  default_domain=sibling.default_domain, direct_tls=direct_tls,
                                  connections=server.c2s_connections, resumption=server.c2s_resumption,
                                  handed_over=sibling.handed_over)
    if hasattr(sibling, "link"):
        kwargs["link"] = sibling.link
    factory = type(sibling)(**kwargs)
    server.c2s_factories.append(factory)
    return factory


# -- extensions -----------------------------------------------------------------------------

def _apply_extensions(server: "TigaseService", wanted: list[tuple[type, Any]], report: ReloadReport) -> None:
    sm = server.sm
    current = {cls.name: (cls, config) for cls, config in server.extension_classes}
    target = {cls.name: (cls, config) for cls, config in wanted}
    for name in [n for n in current if n not in target][::-1]:
        if name in sm.extensions:
            sm.unload_extension(name)
        report.changes.append(f"extension {name} disabled")
    loaded: list[tuple[type, Any]] = []
    for name, (cls, config) in target.items():
        before = current.get(name)
        if before is not None and before == (cls, config) and name in sm.extensions:
            loaded.append((cls, config))
            continue
        if name in sm.extensions:
            sm.unload_extension(name)
        try:
            sm.load_extension(cls, config)
        except Exception as e:
            _log.failure("configuration reload: extension {name} could not be loaded", name=name)
            report.changes.append(f"extension {name} FAILED to load ({e})")
            continue
        loaded.append((cls, config))
        report.changes.append(f"extension {name} {'reloaded' if before is not None else 'enabled'}")
    server.extension_classes = loaded


# -- components -----------------------------------------------------------------------------

def _apply_components(server: "TigaseService", plan: dict[str, Any], report: ReloadReport) -> None:
    components = plan["components"]
    if components is None:
        return
    current = {c.domain: c for c in server.components}
    wanted = {domain: (cls, config) for cls, domain, config in components.local}
    kept = []
    for domain, component in current.items():
        spec = wanted.get(domain)
        if spec is not None and type(component) is spec[0] and component.config == spec[1]:
            kept.append(component)
            continue
        component.detach()
        if spec is None:
            report.changes.append(f"component {domain} removed")
    for domain, (cls, config) in wanted.items():
        if any(c.domain == domain for c in kept):
            continue
        component = cls(domain, config)
        if getattr(component, "needs_stores", False):   # e.g. MUC (docs/components.md)
            component.attach(server.router, server.stores)
        else:
            component.attach(server.router)
        kept.append(component)
        report.changes.append(f"component {domain} {'replaced' if domain in current else 'added'}")
    server.components = kept
    external = server.external_components
    if external is not None:
        before = (external.config, sorted(external.components.items()))
        external.reconfigure(components.listener, components.external)
        if before != (external.config, sorted(external.components.items())):
            report.changes.append("external components")
    elif components.external:
        report.restart.append("[components] external (no accept listener running)")
    if plan["old_outgoing"] != {(o.domain, o.host, o.port) for o in components.outgoing}:
        report.restart.append("[components] connect")

