"""Handler tables for the session manager: IQs by key, hooks by point and priority.

Lookup is one dict access; no XPath scan per stanza. Results are normalised in one
place: an IQ handler's returned element (or None) becomes the result, a raised
``StanzaError`` becomes the error reply, anything else is logged and answered with
``internal-server-error``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.words.xish import domish

from tigasepy.log_level import Logger
from tigasepy.sm.events import HANDLED, HookPoint, Outcome, StanzaEvent, Target
from tigasepy.xmpp.errors import StanzaError
from tigasepy.storage.outage import log_failure

IqKey = tuple[str, str, str, Target]          # (type, payload uri, payload name, target)
IqHandler = Callable[[StanzaEvent], Any]
Hook = Callable[[Any], Any]

_log = Logger(namespace="tigasepy.sm.dispatch")


def as_deferred(result: Any) -> defer.Deferred | None:
    """Turn a coroutine into a Deferred; return a Deferred as is and None for a plain value."""
    if isinstance(result, defer.Deferred):
        return result
    if inspect.iscoroutine(result):
        return defer.Deferred.fromCoroutine(result)
    return None


class IqTable:
    """IQ handlers keyed by (type, payload namespace, payload name, target)."""

    def __init__(self) -> None:
        self._handlers: dict[IqKey, IqHandler] = {}

    def add(self, key: IqKey, handler: IqHandler) -> None:
        """Register ``handler`` for ``key``; one handler per key."""
        if key in self._handlers:
            raise ValueError(f"an IQ handler for {key} is already registered")
        self._handlers[key] = handler

    def remove(self, key: IqKey, handler: IqHandler) -> None:
        """Unregister ``handler`` if it is the one registered for ``key``."""
        if self._handlers.get(key) is handler:
            del self._handlers[key]

    def lookup(self, key: IqKey) -> IqHandler | None:
        """The handler for ``key``, or None."""
        return self._handlers.get(key)

    def keys(self) -> Iterable[IqKey]:
        """Every registered key."""
        return self._handlers.keys()


class HookTable:
    """Handlers per hook point, run highest priority first until one returns HANDLED."""

    def __init__(self) -> None:
        self._hooks: dict[HookPoint, list[tuple[int, int, Hook]]] = {}
        # The handlers per point in running order, rebuilt only when registrations
        # change: the per-stanza path reads a ready list.
        self._ordered: dict[HookPoint, list[Hook]] = {}
        self._counter = 0

    def add(self, point: HookPoint, handler: Hook, priority: int = 0) -> None:
        """Hook ``handler`` at ``point``; equal priorities run in registration order."""
        self._counter += 1
        entries = self._hooks.setdefault(point, [])
        entries.append((-priority, self._counter, handler))
        entries.sort(key=lambda e: (e[0], e[1]))
        self._ordered[point] = [e[2] for e in entries]

    def remove(self, point: HookPoint, handler: Hook) -> None:
        """Unhook ``handler`` from ``point``."""
        entries = [e for e in self._hooks.get(point, []) if e[2] is not handler]
        self._hooks[point] = entries
        if entries:
            self._ordered[point] = [e[2] for e in entries]
        else:
            self._ordered.pop(point, None)

    def has(self, point: HookPoint) -> bool:
        """True when a handler is hooked at ``point`` (one dict lookup)."""
        return point in self._ordered

    def handlers(self, point: HookPoint) -> list[Hook]:
        """The handlers at ``point`` in the order they run."""
        return list(self._ordered.get(point, ()))

    def run(self, point: HookPoint, event: Any) -> "Outcome | defer.Deferred":
        """Run the chain; returns HANDLED/PASS, or a Deferred of it once a handler went async.

        A handler raising ``StanzaError`` stops the chain: the error propagates to the
        caller, who turns it into an error reply.
        """
        handlers = self._ordered.get(point)
        if not handlers:
            return Outcome.PASS
        return self._run_from(handlers, 0, event)

    def _run_from(self, handlers: list[Hook], index: int, event: Any) -> "Outcome | defer.Deferred":
        while index < len(handlers):
            result = handlers[index](event)
            index += 1
            d = as_deferred(result)
            if d is not None:
                def _next(outcome: Any, index: int = index) -> Any:
                    if outcome is HANDLED:
                        return HANDLED
                    return self._run_from(handlers, index, event)
                return d.addCallback(_next)
            if result is HANDLED:
                return HANDLED
        return Outcome.PASS

    def notify(self, point: HookPoint, event: Any) -> None:
        """Run every observer at ``point``; failures are logged, never propagated."""
        for handler in self._ordered.get(point, ()):  # replaced, never mutated: safe to iterate
            try:
                d = as_deferred(handler(event))
            except Exception:
                _log.failure("observer at {point} failed", point=point.name)
                continue
            if d is not None:
                d.addErrback(lambda f, p=point: log_failure(_log, f, "observer at {point} failed", point=p.name))


def error_reply_for(stanza: domish.Element, failure: Failure | BaseException) -> domish.Element | None:
    """The error reply for a failed handling of ``stanza``, or None when none may be sent.

    ``StanzaError`` keeps its condition; anything else is logged and becomes
    ``internal-server-error``. Stanzas of type error (and IQ results) never get one.
    """
    exc = failure.value if isinstance(failure, Failure) else failure
    if not isinstance(exc, StanzaError):
        if isinstance(failure, Failure):
            log_failure(_log, failure, "handler failed for a {kind} stanza", kind=stanza.name)
        else:
            _log.error("handler failed for a {kind} stanza: {exc!r}", kind=stanza.name, exc=exc)
        exc = StanzaError("internal-server-error")
    kind = stanza.getAttribute("type")
    if kind == "error" or (stanza.name == "iq" and kind == "result"):
        return None
    return exc.to_response(stanza)
