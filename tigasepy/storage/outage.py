"""Logging for failures that may be a storage outage: one line each, not a traceback storm."""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure

from tigasepy.log_level import Logger
from tigasepy.storage.interfaces import StorageUnavailable


def log_failure(log: Logger, failure: Failure, message: str, **fields: Any) -> None:
    """Log ``failure``: a ``StorageUnavailable`` as one warning line, anything else with its traceback.

    The database layer already logs the outage itself (once when it starts, once when
    it ends); callers only need to say what they could not do.
    """
    if failure.check(StorageUnavailable):
        log.warn(message + " (storage unavailable: {storage_error})", storage_error=failure.value, **fields)
    else:
        log.failure(message, failure, **fields)
