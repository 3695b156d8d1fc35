"""The log level of tigasepy's own events (``[server] log_level``).

Every tigasepy module logs through ``Logger`` from here, a ``twisted.logger.Logger`` that
drops an event below the level where it is made: it never reaches an observer, so the
per-stanza and per-login debug events cost next to nothing in a server running at
``info``, whatever observers twistd or an embedding application installed. Events of
other libraries (Twisted's own) are untouched.

The level belongs to the process, like Twisted's global log publisher that the events go
to: the service applies its config's level when it starts and on every reload.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger as _TwistedLogger
from twisted.logger import LogLevel

__all__ = ["LEVELS", "Logger", "log_level", "set_log_level"]

#: ``[server] log_level`` names, most verbose first.
LEVELS: tuple[str, ...] = ("debug", "info", "warn", "error", "critical")

_PRIORITY = {level: index for index, level in enumerate(
    (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical))}

# One mutable cell the loggers read on every event: [priority of the least level emitted].
_threshold = [_PRIORITY[LogLevel.info]]


def set_log_level(name: str) -> None:
    """Emit tigasepy's events at ``name`` (one of ``LEVELS``) and above from now on.

    Raises:
        ValueError: ``name`` is not one of ``LEVELS``.
    """
    if name not in LEVELS:
        raise ValueError(f"unknown log level {name!r} (known: {', '.join(LEVELS)})")
    _threshold[0] = LEVELS.index(name)


def log_level() -> str:
    """The level in force (``"info"`` until a service sets one)."""
    return LEVELS[_threshold[0]]


class Logger(_TwistedLogger):
    """A ``twisted.logger.Logger`` that drops events below the level in force."""

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: Any) -> None:
        """Emit the event unless its level is below ``log_level()``."""
        if _PRIORITY.get(level, len(LEVELS)) < _threshold[0]:
            return
        super().emit(level, format, **kwargs)
