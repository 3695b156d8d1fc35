"""The server's own secret (for SCRAM fake salts), generated once and kept in the data directory."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

_SIZE = 32


def load_or_create_secret(path: Path) -> bytes:
    """Read the secret at ``path``, creating it (mode 0600) with fresh random bytes if missing.

    Keeping it across restarts keeps the fake salts of unknown accounts stable, so
    probing for account names learns nothing from a restart.
    """
    try:
        data = path.read_bytes()
        if len(data) >= _SIZE:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    data = secrets.token_bytes(_SIZE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return data
