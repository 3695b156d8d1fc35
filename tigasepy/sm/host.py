"""The API an extension gets: everything it may register or use, and nothing else.

The host records every registration, so ``close()`` undoes them all: disabling or
reloading an extension is a config change, never a restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.words.xish import domish

from tigasepy.sm.disco import Identity
from tigasepy.sm.events import HookPoint, Target

if TYPE_CHECKING:
    from tigasepy.sm.manager import SessionManager
    from tigasepy.sm.session import BoundSession

StreamFeature = Callable[[str, bool], "domish.Element | None"]


class ExtensionHost:
    """One extension's view of the session manager."""

    def __init__(self, sm: "SessionManager", name: str) -> None:
        self._sm = sm
        self.name = name
        self._undo: list[Callable[[], None]] = []

    # -- facts --------------------------------------------------------------------------
    @property
    def clock(self) -> IReactorTime:
        """The reactor's clock; every timer goes through it (and is cancelled on close)."""
        return self._sm.clock

    @property
    def server_config(self) -> Any:
        """The whole server ``Config`` (read-only)."""
        return self._sm.config

    @property
    def domains(self) -> tuple[str, ...]:
        """The domains this server hosts."""
        return self._sm.domains

    def is_local(self, domain: str | None) -> bool:
        """True when ``domain`` is hosted here."""
        return self._sm.is_local_domain(domain or "")

    @property
    def disco(self) -> Any:
        """The disco registry (features and identities every extension declared); read it only."""
        return self._sm.disco

    def store(self, interface: Any) -> Any:
        """The store providing ``interface`` (e.g. ``IRosterStore``)."""
        return self._sm.stores.get(interface)

    # -- registrations ------------------------------------------------------------------
    def add_feature(self, var: str, target: Target = Target.HOST) -> None:
        """Advertise a disco feature for the server (or for accounts with ``Target.BARE``)."""
        self._sm.disco.add_feature(var, target)
        self._undo.append(lambda: self._sm.disco.remove_feature(var, target))

    def add_identity(self, category: str, type_: str, name: str = "", target: Target = Target.HOST) -> None:
        """Advertise a disco identity."""
        identity = Identity(category, type_, name)
        self._sm.disco.add_identity(identity, target)
        self._undo.append(lambda: self._sm.disco.remove_identity(identity, target))

    def add_disco_form(self, form: domish.Element, target: Target = Target.HOST) -> None:
        """Add an extended information form (XEP-0128) to disco#info, e.g. XEP-0157's serverinfo."""
        self._sm.disco.add_form(form, target)
        self._undo.append(lambda: self._sm.disco.remove_form(form, target))

    def add_disco_node(self, node: str, info: Callable[..., Any] | None = None,
                       items: Callable[..., Any] | None = None, target: Target = Target.HOST) -> None:
        """Answer disco#info / disco#items on ``node`` (e.g. XEP-0050's command list).

        Each handler gets the ``StanzaEvent`` and returns the ``<query/>`` element (the
        ``node`` attribute is set for it), a Deferred / coroutine of one, or raises
        ``StanzaError``.
        """
        self._sm.disco.add_node(node, info, items, target)
        self._undo.append(lambda: self._sm.disco.remove_node(node, target))

    def on_iq(self, uri: str, name: str, handler: Callable[..., Any], types: Iterable[str] = ("get",),
              targets: Iterable[Target] = (Target.HOST,)) -> None:
        """Handle IQs of ``types`` whose payload is ``{uri}name`` addressed to ``targets``.

        The handler gets a ``StanzaEvent`` and returns the result payload (an element),
        None for an empty result, ``HANDLED`` when it replied itself, or a Deferred /
        coroutine of one of those; it raises ``StanzaError`` for an error reply.
        """
        for type_ in types:
            for target in targets:
                key = (type_, uri, name, target)
                self._sm.iqs.add(key, handler)
                self._undo.append(lambda key=key: self._sm.iqs.remove(key, handler))

    def hook(self, point: HookPoint, handler: Callable[..., Any], priority: int = 0) -> None:
        """Run ``handler`` at ``point``; higher priority first."""
        self._sm.hooks.add(point, handler, priority)
        self._undo.append(lambda: self._sm.hooks.remove(point, handler))

    def add_stream_feature(self, feature: StreamFeature) -> None:
        """Contribute to ``<stream:features/>``: ``feature(domain, authenticated)`` returns an element or None."""
        self._sm.stream_features.append(feature)
        self._undo.append(lambda: self._sm.stream_features.remove(feature))

    def on_unauthenticated_iq(self, uri: str, name: str, handler: Callable[..., Any]) -> None:
        """Handle IQs on streams not yet authenticated (in-band registration).

        ``handler(domain, stanza)`` returns the reply payload like an ``on_iq`` handler.
        """
        key = (uri, name)
        if key in self._sm.unauthenticated_iqs:
            raise ValueError(f"an unauthenticated IQ handler for {key} exists")
        self._sm.unauthenticated_iqs[key] = handler
        self._undo.append(lambda: self._sm.unauthenticated_iqs.pop(key, None))

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the extension is unloaded (cancel timers, flush state)."""
        self._undo.append(callback)

    # -- actions ------------------------------------------------------------------------
    def route(self, stanza: domish.Element) -> None:
        """Send ``stanza`` to its ``to`` address: a local account, a component or another server."""
        self._sm.route(stanza)

    def notify(self, point: HookPoint, event: Any) -> None:
        """Run the observers of ``point`` (session and account events)."""
        self._sm.hooks.notify(point, event)

    def run_hooks(self, point: HookPoint, event: Any) -> Any:
        """Run the handler chain of ``point``; returns an ``Outcome`` or a Deferred of one."""
        return self._sm.hooks.run(point, event)

    def sessions(self, bare: str) -> "list[BoundSession]":
        """The bound sessions of the account ``bare``."""
        return self._sm.sessions_of(bare)

    def session(self, full: str) -> "BoundSession | None":
        """The session bound to the full JID ``full``, or None."""
        return self._sm.session(full)

    def all_sessions(self) -> "Iterable[BoundSession]":
        """Every bound session on this server."""
        return self._sm.all_sessions()

    def serialized(self, owner: str, job: Callable[..., Any], *args: Any) -> Any:
        """Run ``job(*args)`` (a coroutine function) after every earlier job for ``owner``.

        One queue per account, shared by all extensions, so read-modify-write steps
        on an account's data (roster and subscription state) never interleave.
        """
        return self._sm.account_queue.run(owner, job, *args)

    def account_exists(self, bare: str) -> Any:
        """A Deferred firing True when ``bare`` is a local account."""
        return self._sm.account_exists(bare)

    def close(self) -> None:
        """Undo every registration, newest first."""
        while self._undo:
            self._undo.pop()()
