"""The database layer: one adbapi connection pool per database, interactions by name.

Every store method runs one ``*_txn`` function in one transaction through
``Database.run_interaction(desc, fn, ...)``; ``desc`` names the transaction in
logs. The ``*_txn`` functions take ``(cursor, engine, ...)`` and live at module
level in ``storage/sql/`` so the synchronous command line can run them too, via
``run_sync`` on a plain DB-API connection.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.logger import Logger

from tigasepy.storage.engines import DatabaseEngine

T = TypeVar("T")

#: Interactions slower than this (seconds, queueing included) are logged as warnings.
SLOW_INTERACTION_S = 1.0


class Database:
    """A database reached through an ``adbapi.ConnectionPool`` on ``reactor``'s threads."""

    _log = Logger()

    def __init__(self, engine: DatabaseEngine, reactor: Any) -> None:
        """
        Args:
            engine: what kind of database this is and how to connect to it.
            reactor: the reactor whose thread machinery runs the pool (also its clock).
        """
        self.engine = engine
        self._reactor = reactor
        args, kwargs = engine.pool_arguments()
        self._pool = adbapi.ConnectionPool(engine.module_name, *args, cp_reactor=reactor, **kwargs)

    def run_interaction(self, desc: str, fn: Callable[..., T], *args: Any,
                        **kwargs: Any) -> "defer.Deferred[T]":
        """Run ``fn(cursor, *args, **kwargs)`` in one transaction on the database thread.

        The transaction commits when ``fn`` returns and rolls back when it raises.

        Args:
            desc: a short name for the transaction, used in logs.
            fn: a ``*_txn`` function; it must not touch the reactor.

        Returns:
            A Deferred firing with ``fn``'s result or failing with its exception.
        """
        started = self._reactor.seconds()
        d = self._pool.runInteraction(self._in_transaction, fn, args, kwargs)

        def finished(result: Any) -> Any:
            elapsed = self._reactor.seconds() - started
            if elapsed >= SLOW_INTERACTION_S:
                self._log.warn("slow database interaction {desc} took {elapsed:.3f}s",
                               desc=desc, elapsed=elapsed)
            else:
                self._log.debug("database interaction {desc} took {elapsed:.4f}s",
                                desc=desc, elapsed=elapsed)
            return result

        d.addBoth(finished)
        return d

    def _in_transaction(self, cursor: Any, fn: Callable[..., T], args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> T:
        self.engine.begin(cursor)
        return fn(cursor, *args, **kwargs)

    def close(self) -> None:
        """Close the pool and its connections; pending interactions are not waited for."""
        self._pool.close()

def run_sync(connection: Any, engine: DatabaseEngine, fn: Callable[..., T], *args: Any,
             **kwargs: Any) -> T:
    """Run ``fn(cursor, *args, **kwargs)`` in one transaction on a synchronous connection.

    The command-line counterpart of ``Database.run_interaction``: commits when ``fn``
    returns, rolls back and re-raises when it raises.
    """
    cursor = connection.cursor()
    try:
        engine.begin(cursor)
        result = fn(cursor, *args, **kwargs)
    except BaseException:
        connection.rollback()
        raise
    else:
        connection.commit()
        return result
    finally:
        cursor.close()
