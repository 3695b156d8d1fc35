"""The database layer: one adbapi connection pool per database, interactions by name.

Every store method runs one ``*_txn`` function in one transaction through
``Database.run_interaction(desc, fn, ...)``; ``desc`` names the transaction in
logs. The ``*_txn`` functions take ``(cursor, engine, ...)`` and live at module
level in ``storage/sql/`` so the synchronous command line can run them too, via
``run_sync`` on a plain DB-API connection.

A ``*_txn`` function may run more than once: ``Database`` runs the transaction
again (on a fresh connection where needed) after a serialization failure or
deadlock, and after a connection was found dead before the commit. So it must
have no effect outside its transaction.

Outages: when the database cannot be reached, interactions fail with
``StorageUnavailable`` at once (no queue of waiting requests). ``Database`` logs
one error line when the database becomes unavailable and one line when it is
back; the next interaction after the database returns opens a new connection by
itself.
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable, TypeVar

from twisted.enterprise import adbapi
from twisted.internet import defer, threads
from twisted.python.failure import Failure

from tigasepy.log_level import Logger
from tigasepy.storage.engines import DatabaseEngine
from tigasepy.storage.interfaces import StorageUnavailable

T = TypeVar("T")

#: Interactions slower than this (seconds, queueing included) are logged as warnings.
SLOW_INTERACTION_S = 1.0

#: How often a transaction is run in all, at most, when it keeps hitting retryable errors.
MAX_ATTEMPTS = 3


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class _Retry(Exception):
    """Internal: this attempt failed with ``error``, and running the transaction again is safe."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


class Database:
    """A database reached through an ``adbapi.ConnectionPool`` on ``reactor``'s threads."""

    _log = Logger()

    def __init__(self, engine: DatabaseEngine, reactor: Any, *, max_attempts: int = MAX_ATTEMPTS) -> None:
        """
        Args:
            engine: what kind of database this is and how to connect to it.
            reactor: the reactor whose thread machinery runs the pool (also its clock).
            max_attempts: how often one transaction runs at most (retryable errors).
        """
        self.engine = engine
        self.max_attempts = max(1, max_attempts)
        self._reactor = reactor
        self._available = True
        self._pending: set[defer.Deferred[Any]] = set()
        args, kwargs = engine.pool_arguments()
        self._pool = adbapi.ConnectionPool(engine.module_name, *args, cp_reactor=reactor, **kwargs)

    @property
    def available(self) -> bool:
        """False from a ``StorageUnavailable`` failure until the next success."""
        return self._available

    def run_interaction(self, desc: str, fn: Callable[..., T], *args: Any,
                        **kwargs: Any) -> "defer.Deferred[T]":
        """Run ``fn(cursor, *args, **kwargs)`` in one transaction on a database thread.

        The transaction commits when ``fn`` returns and rolls back when it raises.
        After a serialization failure, a deadlock or a connection found dead before
        the commit, ``fn`` runs again (``max_attempts`` times in all).

        Args:
            desc: a short name for the transaction, used in logs.
            fn: a ``*_txn`` function; it must not touch the reactor.

        Returns:
            A Deferred firing with ``fn``'s result or failing with its exception;
            ``StorageUnavailable`` when the database cannot be reached or the
            connection was lost (during a commit: the outcome is then unknown).
        """
        started = self._reactor.seconds()
        d = threads.deferToThreadPool(self._reactor, self._pool.threadpool,
                                      self._run, desc, fn, args, kwargs)

        def finished(result: Any) -> Any:
            elapsed = self._reactor.seconds() - started
            if isinstance(result, Failure):
                if result.check(StorageUnavailable):
                    self._went_down(desc, result.value)
            else:
                self._came_back()
            if elapsed >= SLOW_INTERACTION_S:
                self._log.warn("slow database interaction {desc} took {elapsed:.3f}s",
                               desc=desc, elapsed=elapsed)
            else:
                self._log.debug("database interaction {desc} took {elapsed:.4f}s",
                                desc=desc, elapsed=elapsed)
            return result

        d.addBoth(finished)
        self._pending.add(d)
        d.addBoth(self._settled, d)
        return d

    def _settled(self, result: Any, d: "defer.Deferred[Any]") -> Any:
        self._pending.discard(d)
        return result

    def _went_down(self, desc: str, error: BaseException) -> None:
        if self._available:
            self._available = False
            self._log.error("database unavailable ({desc} failed): {reason}; requests fail "
                            "until it is back", desc=desc, reason=str(error))
        else:
            self._log.debug("database still unavailable ({desc} failed): {reason}",
                            desc=desc, reason=str(error))

    def _came_back(self) -> None:
        if not self._available:
            self._available = True
            self._log.info("database {where} available again", where=self.engine.describe())

    # --- on a pool thread ---------------------------------------------------------------

    def _run(self, desc: str, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        attempt = 1
        while True:
            try:
                return self._attempt(fn, args, kwargs)
            except _Retry as retry:
                if attempt >= self.max_attempts:
                    raise retry.error from None
                self._log.info("database interaction {desc} attempt {attempt} failed ({reason}); "
                               "running it again", desc=desc, attempt=attempt,
                               reason=_one_line(retry.error))
                if not isinstance(retry.error, StorageUnavailable):
                    time.sleep(random.uniform(0.005, 0.05) * attempt)   # let the other one finish
                attempt += 1

    def _attempt(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        engine = self.engine
        try:
            connection = self._pool.connect()
        except Exception as e:
            if engine.is_disconnect(e, None):
                raise StorageUnavailable(f"cannot connect to {engine.describe()}: {_one_line(e)}") from e
            raise
        committing = False
        try:
            cursor = connection.cursor()
            try:
                engine.begin(cursor)
                result = fn(cursor, *args, **kwargs)
            finally:
                try:
                    cursor.close()
                except Exception:
                    pass
            committing = True
            connection.commit()
            return result
        except BaseException as e:
            if engine.is_disconnect(e, connection):
                self._discard(connection)
                if committing:
                    raise StorageUnavailable(
                        f"lost the connection to {engine.describe()} while committing, the outcome "
                        f"is unknown: {_one_line(e)}") from e
                # Nothing was committed: the transaction can run again on a new connection.
                lost = StorageUnavailable(f"lost the connection to {engine.describe()}: {_one_line(e)}")
                lost.__cause__ = e
                raise _Retry(lost) from e
            self._rollback(connection)
            if engine.is_retryable(e):
                raise _Retry(e) from e
            raise

    def _rollback(self, connection: Any) -> None:
        try:
            connection.rollback()
        except Exception as e:
            self._log.info("rollback failed ({reason}); dropping the connection", reason=_one_line(e))
            self._discard(connection)

    def _discard(self, connection: Any) -> None:
        try:
            self._pool.disconnect(connection)     # closes it; the thread opens a new one when needed
        except Exception:
            pass

    def close(self, drain_timeout_s: float = 10.0) -> "defer.Deferred[None]":
        """Let the interactions under way finish (at most ``drain_timeout_s``), then close.

        Interactions that finishing ones start (a count, then an append) are waited
        for too: a message whose storing had started when shutdown began is written.
        """
        deadline = self._reactor.seconds() + drain_timeout_s
        closed: defer.Deferred[None] = defer.Deferred()

        def drain(_: Any = None) -> None:
            pending = list(self._pending)
            left = deadline - self._reactor.seconds()
            if not pending or left <= 0:
                if pending:
                    self._log.warn("closing the database with {count} interactions still running",
                                   count=len(pending))
                self._pool.close()
                closed.callback(None)
                return
            waiting: defer.Deferred[Any] = defer.DeferredList(pending, consumeErrors=True)
            waiting.addTimeout(left, self._reactor)
            # On the next turn, so that callbacks of what finished can start their follow-ups.
            waiting.addBoth(lambda _: self._reactor.callLater(0, drain))

        drain()
        return closed


def run_sync(connection: Any, engine: DatabaseEngine, fn: Callable[..., T], *args: Any,
             **kwargs: Any) -> T:
    """Run ``fn(cursor, *args, **kwargs)`` in one transaction on a synchronous connection.

    The command-line counterpart of ``Database.run_interaction``: commits when ``fn``
    returns, rolls back and re-raises when it raises. No retries: a command line
    reports the error and its user runs the command again.
    """
    cursor = connection.cursor()
    try:
        engine.begin(cursor)
        result = fn(cursor, *args, **kwargs)
    except BaseException:
        try:
            connection.rollback()
        except Exception:
            pass                # a dead connection: the original error says more
        raise
    else:
        connection.commit()
        return result
    finally:
        try:
            cursor.close()
        except Exception:
            pass
