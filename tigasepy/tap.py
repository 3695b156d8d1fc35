"""twistd glue: ``twistd -n tigasepy [--config PATH] [--domain D] [--c2s-port N] [--data-dir DIR]``.

On first start (no config file yet) a commented config for the machine's host name (or
``--domain``) is written, so that ``twistd -n tigasepy`` in an empty folder gives an
all-in-one server (ARCHITECTURE.md section 5). Command-line options override the file
for this run only. This module and ``cli.py`` are the only ones that touch the global
reactor; everything else has it injected.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.python import usage

from tigasepy.config import Config, ConfigError, default_config_text, default_domain, load_config
from tigasepy.log_level import Logger

if TYPE_CHECKING:
    from twisted.application.service import IService

__all__ = ["DEFAULT_CONFIG_PATH", "Options", "build_service", "install_reload_signal", "makeService", "prepare_config",
           "write_first_config"]

_log = Logger()

DEFAULT_CONFIG_PATH = "tigasepy.toml"
"""The config file used when ``--config`` is not given (in the current directory)."""


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError("a TCP port is 0..65535")
    return port


_port.coerceDoc = "A TCP port number, 0..65535."  # type: ignore[attr-defined]


class Options(usage.Options):
    """Command-line options of the ``tigasepy`` twistd plugin.

    Parsing also loads the configuration (writing it on first start), so that a bad
    config is reported by twistd as a usage error before anything is started.
    """

    synopsis = "[--config PATH] [--domain DOMAIN] [--c2s-port PORT] [--data-dir DIR]"
    longdesc = (
        "Run the tigasepy XMPP server. Without a config file, a commented one for this "
        "machine's host name (or --domain) is written at --config and used."
    )
    optParameters = [
        ["config", "c", DEFAULT_CONFIG_PATH, "The TOML config file (written on first start if missing)."],
        ["domain", "d", None, "Serve only this XMPP domain (overrides [server] domains)."],
        ["c2s-port", None, None, "Client STARTTLS port (overrides [c2s] port; 0 disables)", _port],
        ["data-dir", None, None, "Data directory (overrides [server] data_dir; relative to the cwd)."],
    ]

    #: The loaded, overridden configuration; set by ``postOptions``.
    loaded_config: Config | None = None

    def postOptions(self) -> None:
        """Load the configuration; config errors become one-line usage errors."""
        try:
            self.loaded_config = prepare_config(self)
        except ConfigError as e:
            raise usage.UsageError(f"configuration error: {e}") from None


def prepare_config(options: Any) -> Config:
    """The configuration for a run: the file (written first if missing) plus overrides.

    Args:
        options: parsed ``Options`` (any mapping with the same keys works).

    Returns:
        The validated ``Config``.

    Raises:
        ConfigError: the file is invalid, or an override makes it so.
    """
    path = Path(options["config"]).expanduser()
    domain = options.get("domain")
    if not path.exists():
        write_first_config(path, domain or default_domain())
    try:
        config = load_config(path)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None

    server = config.server
    if domain:
        server = dataclasses.replace(server, domains=(domain,))
    if options.get("data-dir"):
        server = dataclasses.replace(server, data_dir=str(Path(options["data-dir"]).expanduser().absolute()))
    c2s = config.c2s
    if options.get("c2s-port") is not None:
        c2s = dataclasses.replace(c2s, port=int(options["c2s-port"]))
    return dataclasses.replace(config, server=server, c2s=c2s).validate()


def write_first_config(path: Path, domain: str) -> None:
    """Write the commented default config for ``domain`` at ``path`` (first start).

    Raises:
        ConfigError: the file cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with path.open("x", encoding="utf-8") as f:
                f.write(default_config_text(domain))
        except FileExistsError:  # another process wrote it meanwhile: use that one
            return
    except OSError as e:
        raise ConfigError(f"cannot write a first config to {path}: {e.strerror or e}") from None
    _log.info(
        "No config file found: wrote a default one for domain {domain} to {path}; "
        "edit it and restart to change the settings.",
        domain=domain,
        path=str(path.absolute()),
    )


def build_service(config: Config, reactor: Any) -> IService:
    """Build the server's service tree (``tigasepy.service.build_service``).

    Imported on call so that ``twistd tigasepy --help`` stays light, and replaceable in
    tests of this module.
    """
    from tigasepy.service import build_service as build

    return build(config, reactor)


def makeService(options: Options) -> IService:
    """twistd entry point: the whole server tree for the parsed ``options``.

    twistd prints a traceback for any exception raised here, so a configuration error
    found now (for example an extension that cannot be loaded) ends the process with a
    one-line message instead.

    Raises:
        SystemExit: the configuration is invalid.
    """
    from twisted.internet import reactor

    try:
        config = getattr(options, "loaded_config", None) or prepare_config(options)
        service = build_service(config, reactor)
    except ConfigError as e:
        raise SystemExit(f"tigasepy: configuration error: {e}") from None
    if hasattr(service, "reload_from_source"):
        # A reload reads the file again with this run's command-line overrides.
        service.config_loader = lambda: prepare_config(options)  # type: ignore[attr-defined]
        reactor.callWhenRunning(install_reload_signal, service, reactor)
    reactor.callWhenRunning(freeze_after_start, service)
    return service


def freeze_after_start(service: Any) -> None:
    """Once ``service`` has started, hide what start-up allocated from the cyclic garbage
    collector (``gc.freeze``).

    Modules, classes, the config and the extensions live as long as the process, yet each
    full collection walked all of them: 40 ms pauses every few seconds under load, the
    longest stalls a message met (docs/performance.md). Frozen, a full collection walks
    only what was allocated since, about 2 ms. Done by the twistd entry point only: an
    application embedding tigasepy owns its process's collector.
    """
    import gc

    def freeze(result: Any) -> Any:
        gc.collect()
        gc.freeze()
        _log.info("start-up objects frozen out of garbage collection ({count})", count=gc.get_freeze_count())
        return result

    started = getattr(service, "started", None)
    if started is None:
        freeze(None)
    else:
        started.addBoth(freeze)


def install_reload_signal(service: Any, reactor: Any) -> None:
    """SIGHUP reloads the configuration (``TigaseService.reload_from_source``).

    The handler only schedules the reload on the reactor thread; an invalid file is
    logged and changes nothing.
    """
    import signal

    if not hasattr(signal, "SIGHUP"):
        return

    def on_hangup(signum: int, frame: Any) -> None:
        reactor.callFromThread(_reload, service)

    signal.signal(signal.SIGHUP, on_hangup)
    _log.info("SIGHUP reloads the configuration")


def _reload(service: Any) -> None:
    _log.info("SIGHUP: reloading the configuration")
    try:
        service.reload_from_source()
    except Exception:
        _log.failure("configuration reload failed")
