"""The session manager service: bound resources, the stanza pipeline and local delivery.

Stanzas from local clients arrive through ``receive`` (``ISessionManager``),
stanzas for local accounts from anywhere else through ``deliver``. Both run the
extension pipeline (``sm/dispatch.py``); what no handler takes gets the RFC 6120 /
RFC 6121 default.

Filters run first, for messages, presence and IQs alike: ``OutboundFilter`` for a
stanza leaving a local account for another entity (from its client in ``receive``,
or sent on its behalf by an extension through ``route``), ``InboundFilter`` for a
stanza arriving for a local account from another entity, before delivery, offline
storage and the IQ table. Stanzas between an account's own resources and to or
from the server itself pass no filter.
"""

from __future__ import annotations

import functools
import secrets
from typing import Any, Iterable

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.interfaces import IClientSession, IRouter, ISessionManager
from tigasepy.log_level import Logger
from tigasepy.sm import events
from tigasepy.sm.disco import DiscoRegistry
from tigasepy.sm.dispatch import HookTable, IqTable, as_deferred, error_reply_for
from tigasepy.sm.events import HANDLED, Outcome, SessionEvent, StanzaEvent, Target
from tigasepy.sm.host import ExtensionHost, StreamFeature
from tigasepy.sm.queue import OwnerQueue
from tigasepy.sm.session import BoundSession
from tigasepy.storage.interfaces import IAccountStore
from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.jid import MAX_PART_BYTES, domain_of, parse_jid
from tigasepy.xmpp.stanza import iq_result

_IQ_TYPES = frozenset({"get", "set", "result", "error"})
_JID_CACHE_SIZE = 8192


@implementer(ISessionManager)
class SessionManager(service.Service):
    """Owns the sessions of local accounts and runs the extension pipeline.

    Args:
        domains: the hosted domains.
        stores: the store registry (``.get(IInterface)``).
        router: where stanzas for other domains go.
        clock: the reactor (time and timers).
        max_resources: bound resources allowed per account.
        config: the whole server ``Config`` (read-only; extensions may consult it).
    """

    _log = Logger()

    def __init__(self, domains: Iterable[str], stores: Any, router: IRouter, clock: IReactorTime,
                 max_resources: int = 16, config: Any = None) -> None:
        self.domains = tuple(domains)
        self._domain_set = frozenset(self.domains)
        self.stores = stores
        self.router = router
        self.clock = clock
        self.max_resources = max_resources
        self.config = config
        self.iqs = IqTable()
        self.hooks = HookTable()
        self.disco = DiscoRegistry()
        self.stream_features: list[StreamFeature] = []
        self.unauthenticated_iqs: dict[tuple[str, str], Any] = {}
        #: IQ id -> callback(reply) for requests the server sent (``ExtensionHost.request``).
        self.iq_waiters: dict[str, Any] = {}
        self.extensions: dict[str, tuple[Any, ExtensionHost]] = {}
        self.account_queue = OwnerQueue()
        self._in_flight: set[defer.Deferred[Any]] = set()
        self.drain_timeout_s = 10.0
        self._sessions: dict[str, dict[str, BoundSession]] = {}
        self._by_handle: dict[int, BoundSession] = {}
        # Bounded, owned by this service: stringprep is the costliest part of addressing.
        self.parse_jid = functools.lru_cache(maxsize=_JID_CACHE_SIZE)(parse_jid)
        #: Reloads the server's configuration (set by the service tree; ``tigasepy/reload.py``).
        self.reloader: Any = None

    # -- extensions ---------------------------------------------------------------------
    def load_extension(self, cls: type, config: Any) -> Any:
        """Instantiate extension ``cls`` with its config and a fresh host; returns it."""
        name = cls.name
        if name in self.extensions:
            raise ValueError(f"extension {name!r} is already loaded")
        host = ExtensionHost(self, name)
        try:
            extension = cls(config, host)
        except BaseException:
            host.close()
            raise
        self.extensions[name] = (extension, host)
        return extension

    def unload_extension(self, name: str) -> None:
        """Undo everything extension ``name`` registered."""
        _extension, host = self.extensions.pop(name)
        host.close()

    def stopService(self) -> Any:
        """Wait (bounded) for stanza work in flight, such as offline storing, then unload."""
        super().stopService()
        pending = list(self._in_flight)
        drained: defer.Deferred[Any] = defer.DeferredList(pending, consumeErrors=True)
        if pending:
            self._log.info("waiting for {count} stanzas still being processed", count=len(pending))
            drained.addTimeout(self.drain_timeout_s, self.clock)
            drained.addErrback(lambda f: self._log.warn("stopping with stanzas still being processed"))

        def _unload(_: Any) -> None:
            for name in list(self.extensions)[::-1]:
                self.unload_extension(name)

        return drained.addCallback(_unload)

    # -- ISessionManager ----------------------------------------------------------------
    def set_domains(self, domains: Iterable[str]) -> None:
        """Host exactly ``domains`` from now on (virtual hosts added or removed at run time)."""
        self.domains = tuple(domains)
        self._domain_set = frozenset(self.domains)

    def is_local_domain(self, domain: str) -> bool:
        """True when ``domain`` is hosted here."""
        return domain in self._domain_set

    def features_for(self, domain: str, authenticated: bool) -> list[domish.Element]:
        """Stream features extensions contribute for ``domain`` at this negotiation stage."""
        out = []
        for feature in self.stream_features:
            element = feature(domain, authenticated)
            if element is not None:
                out.append(element)
        return out

    def unauthenticated_iq(self, domain: str, stanza: domish.Element) -> defer.Deferred:
        """Answer an IQ on a stream that has not authenticated (XEP-0077 registration).

        Fires with the reply stanza (result or error).
        """
        payload = _first_element(stanza)
        handler = None
        if payload is not None and stanza.getAttribute("type") in ("get", "set"):
            handler = self.unauthenticated_iqs.get((payload.uri or "", payload.name))
        if handler is None:
            return defer.succeed(StanzaError("service-unavailable").to_response(stanza))
        d = defer.maybeDeferred(handler, domain, stanza)
        d.addCallback(lambda result: _iq_reply(stanza, result))
        d.addErrback(lambda f: error_reply_for(stanza, f))
        return d

    def bind(self, handle: IClientSession, username: str, domain: str, resource: str | None) -> JID:
        """Bind a resource (RFC 6120 7); the newer session wins a conflict."""
        bare = f"{username}@{domain}"
        resources = self._sessions.setdefault(bare, {})
        if resource:
            try:
                jid = JID(tuple=(username, domain, resource))
            except InvalidFormat:
                raise StanzaError("bad-request", "invalid resource") from None
            if len(jid.resource.encode("utf-8")) > MAX_PART_BYTES:
                raise StanzaError("bad-request", "resource longer than 1023 octets (RFC 7622)")
        else:
            jid = None
        if jid is None or not jid.resource:
            while True:
                candidate = "tigase-" + secrets.token_hex(4)
                if candidate not in resources:
                    break
            jid = JID(tuple=(username, domain, candidate))
        old = resources.get(jid.resource)
        if old is not None:
            self._log.info("resource conflict on {jid}: the older session is replaced", jid=jid.full())
            self._end(old)
            old.handle.close("conflict", "Replaced by a new session")
            resources = self._sessions.setdefault(bare, {})
        elif len(resources) >= self.max_resources:
            raise StanzaError("resource-constraint", "too many resources bound")
        session = BoundSession(handle, jid)
        resources[jid.resource] = session
        self._by_handle[id(handle)] = session
        self.hooks.notify(events.SessionBound, SessionEvent(session))
        return jid

    def unbind(self, handle: IClientSession) -> None:
        """Forget the session of ``handle`` (its stream ended)."""
        session = self._by_handle.get(id(handle))
        if session is not None and session.handle is handle:
            self._end(session)

    def replace_handle(self, old: IClientSession, new: IClientSession) -> bool:
        """The bound session of ``old`` goes on through ``new`` (XEP-0198 resumption).

        Same JID, presence and extension data; nothing is broadcast. Returns False when
        ``old`` holds no bound session (it ended meanwhile).
        """
        session = self._by_handle.get(id(old))
        if session is None or session.handle is not old:
            return False
        del self._by_handle[id(old)]
        session.handle = new
        self._by_handle[id(new)] = session
        return True

    def _end(self, session: BoundSession) -> None:
        self._by_handle.pop(id(session.handle), None)
        resources = self._sessions.get(session.bare)
        if resources is not None and resources.get(session.resource) is session:
            del resources[session.resource]
            if not resources:
                del self._sessions[session.bare]
        self.hooks.notify(events.SessionEnded, SessionEvent(session))

    def receive(self, handle: IClientSession, stanza: domish.Element) -> None:
        """A stanza from a bound local client (``from`` already stamped by c2s)."""
        session = self._by_handle.get(id(handle))
        if session is None:
            return
        try:
            to = self._address(stanza)
            if stanza.name == "iq":
                _check_iq(stanza)
        except StanzaError as e:
            if stanza.getAttribute("type") != "error":
                session.send(e.to_response(stanza))
            return
        if to is None:
            target = Target.SELF
        elif to.user is None and to.resource is None and to.host in self._domain_set:
            target = Target.HOST
        elif to.resource is None and to.userhost() == session.bare:
            target = Target.SELF
        elif to.resource is None:
            target = Target.BARE
        else:
            target = Target.FULL
        event = StanzaEvent(stanza, session.jid, to, target, session)
        if target is Target.BARE or (target is Target.FULL and to.userhost() != session.bare):
            self._filter(events.OutboundFilter, event, self._from_client)
        else:
            self._from_client(event)

    def _from_client(self, event: StanzaEvent) -> "defer.Deferred[Any] | None":
        name = event.stanza.name
        if name == "message":
            return self._guard(event, self.hooks.run(events.MessageFromClient, event), self._message_onward)
        if name == "presence":
            return self._guard(event, self.hooks.run(events.PresenceFromClient, event), self._presence_onward)
        self._iq_from_client(event)
        return None

    # -- delivery -----------------------------------------------------------------------
    def route(self, stanza: domish.Element) -> None:
        """Send ``stanza`` towards its ``to``: local accounts directly, anything else via the router.

        A stanza sent on behalf of a local account (``from`` one of its JIDs, ``to``
        another entity) passes the outbound filters first.
        """
        if self.hooks.has(events.OutboundFilter):
            event = self._on_behalf(stanza)
            if event is not None:
                self._filter(events.OutboundFilter, event, lambda e: self._forward(e.stanza))
                return
        self._forward(stanza)

    def _on_behalf(self, stanza: domish.Element) -> StanzaEvent | None:
        """The event for a stanza from a local account to another entity, or None."""
        sender_text = stanza.getAttribute("from")
        to_text = stanza.getAttribute("to")
        if not sender_text or not to_text:
            return None
        try:
            sender = self.parse_jid(sender_text)
            to = self.parse_jid(to_text)
        except InvalidFormat:
            return None
        if sender is None or to is None:
            return None
        if sender.user is None or sender.host not in self._domain_set:
            return None
        if to.user is None and to.resource is None and to.host in self._domain_set:
            return None
        if to.userhost() == sender.userhost():
            return None
        return StanzaEvent(stanza, sender, to, Target.FULL if to.resource else Target.BARE)

    def _forward(self, stanza: domish.Element) -> None:
        to = stanza.getAttribute("to")
        domain = domain_of(to).lower() if to else None
        if domain is not None and domain in self._domain_set:
            self.deliver(stanza)
        else:
            self.router.route(stanza)

    def deliver(self, stanza: domish.Element) -> None:
        """A stanza for a local address, from the router, another local user or an extension."""
        self._deliver(stanza, False)

    def redeliver(self, stanza: domish.Element) -> None:
        """A message a session was given but never acknowledged before it ended (XEP-0198).

        Delivered again by the usual rules (another resource, offline storage); the event
        carries ``extra[events.REDELIVERED] = True`` so that observers that saw the message
        the first time (archiving, carbons) can leave it alone.
        """
        self._deliver(stanza, True)

    def _deliver(self, stanza: domish.Element, redelivered: bool) -> None:
        try:
            to = self._address(stanza)
            sender = self.parse_jid(stanza["from"]) if stanza.getAttribute("from") else None
            if stanza.name == "iq":
                _check_iq(stanza)
        except (StanzaError, InvalidFormat) as e:
            if isinstance(e, StanzaError) and stanza.getAttribute("type") != "error":
                self.router.route(e.to_response(stanza))
            return
        if to is None:
            return
        if to.user is None:
            target = Target.HOST if to.resource is None else Target.FULL
        elif to.resource is None:
            target = Target.SELF if sender is not None and sender.userhost() == to.userhost() else Target.BARE
        else:
            target = Target.FULL
        event = StanzaEvent(stanza, sender, to, target)
        if redelivered:
            event.extra[events.REDELIVERED] = True
        self._deliver_event(event)

    def _deliver_event(self, event: StanzaEvent) -> "defer.Deferred[Any] | None":
        to = event.to
        if (to is not None and to.user is not None and event.sender is not None
                and event.sender.userhost() != to.userhost()):
            return self._filter(events.InboundFilter, event, self._to_local)
        return self._to_local(event)

    def _to_local(self, event: StanzaEvent) -> "defer.Deferred[Any] | None":
        name = event.stanza.name
        if name == "message":
            return self._guard(event, self.hooks.run(events.MessageToLocal, event), self._message_default)
        if name == "presence":
            return self._guard(event, self.hooks.run(events.PresenceToLocal, event), self._presence_default)
        if name == "iq":
            self._iq_to_local(event)
        return None

    def _filter(self, point: events.HookPoint, event: StanzaEvent, onward: Any) -> "defer.Deferred[Any] | None":
        """Run the filters at ``point``, then ``onward(event)`` unless one took the stanza."""
        try:
            outcome = self.hooks.run(point, event)
        except Exception as e:
            self._reply_error(event, e)
            return None
        if outcome is Outcome.PASS:
            return onward(event)
        return self._guard(event, outcome, onward)

    def _guard(self, event: StanzaEvent, outcome: Any, onward: Any) -> "defer.Deferred[Any] | None":
        """Continue with ``onward(event)`` unless a hook took the stanza; map errors to replies.

        Returns the Deferred of the work still under way (tracked, so that shutdown
        waits for it), or None when everything was done synchronously.
        """
        if isinstance(outcome, defer.Deferred):
            def _then(result: Any) -> Any:
                if result is not HANDLED:
                    return onward(event)
                return None
            outcome.addCallback(_then)
            outcome.addErrback(lambda f: self._reply_error(event, f))
            return self._track(outcome)
        if outcome is not HANDLED:
            try:
                return onward(event)
            except Exception as e:
                self._reply_error(event, e)
        return None

    def _track(self, d: "defer.Deferred[Any]") -> "defer.Deferred[Any]":
        """Remember ``d`` until it fires: stanza work in flight that shutdown waits for."""
        self._in_flight.add(d)

        def _done(result: Any) -> Any:
            self._in_flight.discard(d)
            return result

        d.addBoth(_done)
        return d

    def _reply_error(self, event: StanzaEvent, failure: Any) -> None:
        reply = error_reply_for(event.stanza, failure)
        if reply is None:
            return
        self._reply(event, reply)

    def _message_onward(self, event: StanzaEvent) -> "defer.Deferred[Any] | None":
        """Deliver a client's message (returns the work still under way, so that a
        Deferred tracking the earlier steps also waits for delivery and offline storage)."""
        if event.to is None:
            event.stanza["to"] = event.session.bare if event.session else ""
            event.to = self.parse_jid(event.stanza["to"])
        if event.to.host in self._domain_set:
            if event.target is Target.SELF:
                event.target = Target.BARE
            event.session = None
            return self._deliver_event(event)
        self.router.route(event.stanza)
        return None

    def _presence_onward(self, event: StanzaEvent) -> None:
        if event.to is not None:
            self._forward(event.stanza)  # the outbound filters saw it in receive()

    def _message_default(self, event: StanzaEvent) -> None:
        if event.type in ("error", "headline"):
            return
        raise StanzaError("service-unavailable")

    def _presence_default(self, event: StanzaEvent) -> None:
        if event.target is Target.FULL:
            session = self.session(event.to.full())
            if session is not None:
                session.send(event.stanza)

    # -- IQs ----------------------------------------------------------------------------
    def _iq_from_client(self, event: StanzaEvent) -> None:
        stanza = event.stanza
        to = event.to
        if to is not None and to.host not in self._domain_set:
            self.router.route(stanza)
            return
        if event.target is Target.BARE or event.target is Target.FULL:
            event.session = None
            self._deliver_event(event)
            return
        self._run_iq(event)

    def _iq_to_local(self, event: StanzaEvent) -> None:
        stanza = event.stanza
        kind = stanza["type"]
        if event.target is Target.FULL:
            session = self.session(event.to.full())
            payload = _first_element(stanza)
            handler = None
            if payload is not None and kind in ("get", "set"):
                handler = self.iqs.lookup((kind, payload.uri or "", payload.name, Target.FULL))
            if handler is None:
                if session is not None:
                    session.send(stanza)
                elif kind in ("get", "set"):
                    self._reply(event, StanzaError("service-unavailable").to_response(stanza))
                return
        if kind in ("result", "error"):
            self._answered(stanza)
            return
        self._run_iq(event)

    def _run_iq(self, event: StanzaEvent) -> None:
        stanza = event.stanza
        kind = stanza["type"]
        if kind in ("result", "error"):
            self._answered(stanza)
            return
        payload = _first_element(stanza)
        handler = self.iqs.lookup((kind, payload.uri or "", payload.name, event.target))
        if handler is None:
            self._reply(event, StanzaError("service-unavailable").to_response(stanza))
            return
        try:
            result = handler(event)
        except Exception as e:
            reply = error_reply_for(stanza, e)
            if reply is not None:
                self._reply(event, reply)
            return
        d = as_deferred(result)
        if d is None:
            if result is not HANDLED:
                self._reply(event, _iq_reply(stanza, result))
            return
        d.addCallback(lambda r: None if r is HANDLED else self._reply(event, _iq_reply(stanza, r)))
        d.addErrback(lambda f: self._reply_error(event, f))
        self._track(d)

    def _answered(self, stanza: domish.Element) -> None:
        """Hand a result or error to the server's request waiting for it (if any)."""
        waiter = self.iq_waiters.pop(stanza.getAttribute("id") or "", None)
        if waiter is not None:
            waiter(stanza)

    def _reply(self, event: StanzaEvent, reply: domish.Element) -> None:
        if event.session is not None:
            event.session.send(reply)
        elif reply.getAttribute("to"):
            self.route(reply)

    # -- lookups ------------------------------------------------------------------------
    def sessions_of(self, bare: str) -> list[BoundSession]:
        """The bound sessions of account ``bare``."""
        resources = self._sessions.get(bare)
        return list(resources.values()) if resources else []

    def session(self, full: str) -> BoundSession | None:
        """The session bound to ``full``, or None."""
        bare, _, resource = full.partition("/")
        resources = self._sessions.get(bare)
        return resources.get(resource) if resources else None

    def all_sessions(self) -> Iterable[BoundSession]:
        """Every bound session."""
        for resources in list(self._sessions.values()):
            yield from list(resources.values())

    def session_count(self) -> int:
        """How many resources are bound."""
        return len(self._by_handle)

    def account_exists(self, bare: str) -> defer.Deferred:
        """Fires True when ``bare`` is an account here (a bound session proves it at once)."""
        if bare in self._sessions:
            return defer.succeed(True)
        return self.stores.get(IAccountStore).exists(bare)

    def _address(self, stanza: domish.Element) -> JID | None:
        to = stanza.getAttribute("to")
        if not to:
            return None
        try:
            return self.parse_jid(to)
        except InvalidFormat:
            raise StanzaError("jid-malformed") from None


def _first_element(stanza: domish.Element) -> domish.Element | None:
    for child in stanza.children:
        if isinstance(child, domish.Element):
            return child
    return None


def _check_iq(stanza: domish.Element) -> None:
    """RFC 6120 8.2.3: an IQ needs an id and a known type; get/set carry exactly one child."""
    kind = stanza.getAttribute("type")
    if kind not in _IQ_TYPES or not stanza.getAttribute("id"):
        raise StanzaError("bad-request", "IQ needs an id and a valid type")
    if kind in ("get", "set"):
        children = [c for c in stanza.children if isinstance(c, domish.Element)]
        if len(children) != 1:
            raise StanzaError("bad-request", "an IQ get or set carries exactly one payload")


def _iq_reply(request: domish.Element, result: Any) -> domish.Element:
    if isinstance(result, domish.Element) and result.name == "iq" and result.uri is None:
        return result
    return iq_result(request, result if isinstance(result, domish.Element) else None)
