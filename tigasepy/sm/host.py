"""The API an extension gets: everything it may register or use, and nothing else.

The host records every registration, so ``close()`` undoes them all: disabling or
reloading an extension is a config change, never a restart.

Virtual hosts: an extension that some hosted domains do not serve (``[hosts."DOMAIN"]
extensions``, ``tigasepy.extensions.hosts_without``) gets a host that filters for it:
its IQ handlers answer ``service-unavailable`` and its disco nodes ``item-not-found`` for
those domains, its hooks let their stanzas and sessions pass by, its stream features and
its disco features, identities and forms are left out there. Account removal still
reaches it (the data of an account is dropped whatever the host serves). Whose domain
counts: for a stanza from a local client (``*FromClient``, ``OutboundFilter``) the
sender's, for one to a local account (``*ToLocal``, ``Undeliverable``, ``InboundFilter``,
``MessageDelivered``) the recipient's, for an IQ the addressed account's or server's (the
sender's own for an IQ to itself). The filter is chosen when the extension is loaded;
without such hosts nothing is wrapped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.words.xish import domish

from tigasepy.sm.disco import Identity
from tigasepy.sm.events import (
    PASS, AccountEvent, AccountRemoved, DeliveryEvent, HookPoint, InboundFilter, MessageDelivered, MessageToLocal,
    PresenceToLocal, SessionEvent, StanzaEvent, Target, Undeliverable,
)

if TYPE_CHECKING:
    from tigasepy.sm.manager import SessionManager
    from tigasepy.sm.session import BoundSession

StreamFeature = Callable[[str, bool], "domish.Element | None"]

#: Hook points whose stanza concerns its recipient (a local account); at the others, its sender.
_RECIPIENT_POINTS = frozenset({MessageToLocal, PresenceToLocal, Undeliverable, InboundFilter, MessageDelivered})


def event_domain(event: Any, recipient: bool) -> str | None:
    """The hosted domain an event concerns (see the module docstring), or None."""
    if isinstance(event, DeliveryEvent):
        event, recipient = event.event, True
    if isinstance(event, StanzaEvent):
        if recipient:
            jid = event.to
        else:
            jid = event.session.jid if event.session is not None else event.sender
        return jid.host if jid is not None else None
    if isinstance(event, SessionEvent):
        return event.session.jid.host
    if isinstance(event, AccountEvent):
        return event.jid.rpartition("@")[2]
    return None


def _iq_domain(event: StanzaEvent) -> str | None:
    if event.target is Target.SELF or event.to is None:
        jid = event.session.jid if event.session is not None else event.sender
    else:
        jid = event.to
    return jid.host if jid is not None else None


class ExtensionHost:
    """One extension's view of the session manager."""

    def __init__(self, sm: "SessionManager", name: str) -> None:
        from tigasepy.extensions import hosts_without

        self._sm = sm
        self.name = name
        self._undo: list[Callable[[], None]] = []
        #: The hosted domains this extension does not serve (virtual hosts).
        self.hidden_on: frozenset[str] = hosts_without(getattr(sm, "config", None), name)

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

    def component_domains(self, domain: str) -> list[str]:
        """The routed domains under ``domain`` that are not hosted here (components such as
        ``conference.DOMAIN``), for the server's disco#items."""
        router = getattr(self._sm, "router", None)
        names = router.domains() if router is not None and hasattr(router, "domains") else []
        return [d for d in names if d.endswith("." + domain) and not self._sm.is_local_domain(d)]

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
        hidden = self.hidden_on
        self._sm.disco.add_feature(var, target, hidden)
        self._undo.append(lambda: self._sm.disco.remove_feature(var, target, hidden))

    def add_identity(self, category: str, type_: str, name: str = "", target: Target = Target.HOST) -> None:
        """Advertise a disco identity."""
        identity = Identity(category, type_, name)
        hidden = self.hidden_on
        self._sm.disco.add_identity(identity, target, hidden)
        self._undo.append(lambda: self._sm.disco.remove_identity(identity, target, hidden))

    def add_disco_form(self, form: domish.Element, target: Target = Target.HOST) -> None:
        """Add an extended information form (XEP-0128) to disco#info, e.g. XEP-0157's serverinfo."""
        self._sm.disco.add_form(form, target, self.hidden_on)
        self._undo.append(lambda: self._sm.disco.remove_form(form, target))

    def add_disco_node(self, node: str, info: Callable[..., Any] | None = None,
                       items: Callable[..., Any] | None = None, target: Target = Target.HOST) -> None:
        """Answer disco#info / disco#items on ``node`` (e.g. XEP-0050's command list).

        Each handler gets the ``StanzaEvent`` and returns the ``<query/>`` element (the
        ``node`` attribute is set for it), a Deferred / coroutine of one, or raises
        ``StanzaError``.
        """
        if self.hidden_on:
            info = self._guarded_node(info)
            items = self._guarded_node(items)
        self._sm.disco.add_node(node, info, items, target)
        self._undo.append(lambda: self._sm.disco.remove_node(node, target))

    def _guarded_node(self, handler: Callable[..., Any] | None) -> Callable[..., Any] | None:
        if handler is None:
            return None
        hidden = self.hidden_on

        def guarded(event: StanzaEvent) -> Any:
            if _iq_domain(event) in hidden:
                from tigasepy.xmpp.errors import StanzaError

                raise StanzaError("item-not-found")
            return handler(event)

        return guarded

    def on_iq(self, uri: str, name: str, handler: Callable[..., Any], types: Iterable[str] = ("get",),
              targets: Iterable[Target] = (Target.HOST,)) -> None:
        """Handle IQs of ``types`` whose payload is ``{uri}name`` addressed to ``targets``.

        The handler gets a ``StanzaEvent`` and returns the result payload (an element),
        None for an empty result, ``HANDLED`` when it replied itself, or a Deferred /
        coroutine of one of those; it raises ``StanzaError`` for an error reply.
        """
        if self.hidden_on:
            handler = self._guarded_iq(handler)
        for type_ in types:
            for target in targets:
                key = (type_, uri, name, target)
                self._sm.iqs.add(key, handler)
                self._undo.append(lambda key=key: self._sm.iqs.remove(key, handler))

    def _guarded_iq(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        hidden = self.hidden_on

        def guarded(event: StanzaEvent) -> Any:
            if _iq_domain(event) in hidden:
                from tigasepy.xmpp.errors import StanzaError

                raise StanzaError("service-unavailable")
            return handler(event)

        return guarded

    def hook(self, point: HookPoint, handler: Callable[..., Any], priority: int = 0) -> None:
        """Run ``handler`` at ``point``; higher priority first."""
        if self.hidden_on and point is not AccountRemoved:
            hidden, recipient, inner = self.hidden_on, point in _RECIPIENT_POINTS, handler

            def handler(event: Any) -> Any:   # noqa: F811 - the guarded handler replaces it
                if event_domain(event, recipient) in hidden:
                    return PASS
                return inner(event)

        self._sm.hooks.add(point, handler, priority)
        self._undo.append(lambda: self._sm.hooks.remove(point, handler))

    def add_stream_feature(self, feature: StreamFeature) -> None:
        """Contribute to ``<stream:features/>``: ``feature(domain, authenticated)`` returns an element or None."""
        if self.hidden_on:
            hidden, inner = self.hidden_on, feature

            def feature(domain: str, authenticated: bool) -> "domish.Element | None":  # noqa: F811
                return None if domain in hidden else inner(domain, authenticated)

        self._sm.stream_features.append(feature)
        self._undo.append(lambda: self._sm.stream_features.remove(feature))

    def on_unauthenticated_iq(self, uri: str, name: str, handler: Callable[..., Any]) -> None:
        """Handle IQs on streams not yet authenticated (in-band registration).

        ``handler(domain, stanza)`` returns the reply payload like an ``on_iq`` handler.
        """
        key = (uri, name)
        if self.hidden_on:
            hidden, inner = self.hidden_on, handler

            def handler(domain: str, stanza: domish.Element) -> Any:  # noqa: F811
                if domain in hidden:
                    from tigasepy.xmpp.errors import StanzaError

                    raise StanzaError("service-unavailable")
                return inner(domain, stanza)

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

    def request(self, stanza: domish.Element, timeout: float = 30.0) -> Any:
        """Send the IQ get/set ``stanza`` (its ``from`` a hosted domain or a local account) and
        fire with the reply stanza (result or error), or with None after ``timeout`` seconds.

        The id is made unique here; replies are matched on it and on the address asked.
        """
        import secrets

        from twisted.internet import defer

        iq_id = "tgs-" + secrets.token_hex(8)
        stanza["id"] = iq_id
        asked = stanza.getAttribute("to")
        d: defer.Deferred = defer.Deferred()

        def answered(reply: domish.Element) -> None:
            if timer.active():
                timer.cancel()
            if reply.getAttribute("from") != asked:
                d.callback(None)
            else:
                d.callback(reply)

        def expired() -> None:
            if self._sm.iq_waiters.pop(iq_id, None) is not None:
                d.callback(None)

        timer = self.clock.callLater(timeout, expired)
        self._sm.iq_waiters[iq_id] = answered
        self._sm.route(stanza)
        return d

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

    def reload_configuration(self) -> Any:
        """Reload the server's configuration file and apply it (``tigasepy/reload.py``).

        Returns the ``ReloadReport``. Raises ``RuntimeError`` when the server was built
        without a way to reload (an embedder's own tree).
        """
        reloader = self._sm.reloader
        if reloader is None:
            raise RuntimeError("this server cannot reload its configuration")
        return reloader()

    def close(self) -> None:
        """Undo every registration, newest first."""
        while self._undo:
            self._undo.pop()()
