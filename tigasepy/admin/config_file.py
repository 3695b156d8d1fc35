"""Small, comment-preserving edits of the TOML config file (``tigasepy host add/del``).

Only the ``domains = [...]`` assignment of the ``[server]`` table is rewritten; every
other line, comment and blank stays as it was. The result is validated as a whole
config before it replaces the file (atomically, keeping the file's mode).
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from pathlib import Path

from tigasepy.config import Config, ConfigError, config_from_dict

_TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_DOMAINS = re.compile(r"^\s*domains\s*=")


class ConfigEditError(Exception):
    """The file cannot be edited this way (one line for the user)."""


def _domains_span(text: str) -> tuple[int, int]:
    """Start and end offsets of the ``domains = [...]`` assignment in the ``[server]`` table."""
    offset = 0
    table = None
    for line in text.splitlines(keepends=True):
        header = _TABLE.match(line)
        if header:
            table = header.group(1).strip().strip('"')
        elif table == "server" and _DOMAINS.match(line):
            start = offset + line.index("domains")
            opening = text.find("[", start)
            closing = text.find("]", opening)
            if opening < 0 or closing < 0:
                break
            return start, closing + 1
        offset += len(line)
    raise ConfigEditError("no 'domains = [...]' line in the [server] table to edit; change it by hand")


def with_domains(text: str, domains: list[str]) -> str:
    """``text`` with the ``[server] domains`` list replaced by ``domains``."""
    start, end = _domains_span(text)
    listed = ", ".join('"' + d.replace("\\", "\\\\").replace('"', '\\"') + '"' for d in domains)
    return text[:start] + f"domains = [{listed}]" + text[end:]


def set_domains(path: Path, domains: list[str]) -> Config:
    """Rewrite the config file at ``path`` with ``[server] domains = domains``.

    Returns:
        The new config (validated).

    Raises:
        ConfigEditError: the file cannot be read, edited or written, or the result is invalid.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigEditError(f"cannot read {path}: {e.strerror or e}") from None
    new_text = with_domains(text, domains)
    try:
        config = config_from_dict(tomllib.loads(new_text), source=str(path.resolve()))
    except (tomllib.TOMLDecodeError, ConfigError) as e:
        raise ConfigEditError(f"the edited config would be invalid: {e}") from None
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new_text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ConfigEditError(f"cannot write {path}: {e.strerror or e}") from None
    return config
