"""Per-account serialization: one read-modify-write job at a time for each account."""

from __future__ import annotations

from typing import Any, Callable, Coroutine

from twisted.internet import defer


class OwnerQueue:
    """Runs one job at a time per roster owner, so that read-modify-write steps never interleave.

    Jobs for different owners run concurrently; a job's own follow-ups (e.g. a local
    contact's auto-reply arriving while it runs) queue behind it rather than deadlock,
    since nothing waits on a queued job from inside a running one.
    """

    def __init__(self) -> None:
        self._locks: dict[str, defer.DeferredLock] = {}

    def run(self, owner: str, job: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> "defer.Deferred[Any]":
        """Run ``job(*args)`` (a coroutine function) once ``owner``'s earlier jobs finished."""
        lock = self._locks.get(owner)
        if lock is None:
            lock = self._locks[owner] = defer.DeferredLock()

        def _start() -> "defer.Deferred[Any]":
            return defer.Deferred.fromCoroutine(job(*args))

        def _release(result: Any) -> Any:
            if not lock.locked and not lock.waiting and self._locks.get(owner) is lock:
                del self._locks[owner]
            return result

        d = lock.run(_start)
        d.addBoth(_release)
        return d

    def __len__(self) -> int:
        return len(self._locks)
