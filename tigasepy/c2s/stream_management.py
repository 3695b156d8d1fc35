"""XEP-0198 Stream Management for client streams: ack state, detached sessions, resumption.

The pieces:

- ``AckState``: the counters and the unacknowledged queue of one session. A
  ``ClientStream`` holds it while it is connected; it moves to a ``DetachedSession``
  when the connection drops and to the resuming ``ClientStream`` after ``<resume/>``.
- ``DetachedSession``: the ``IClientSession`` the session manager holds while a
  resumable session has no connection. It keeps what the SM sends in the queue (the
  session stays bound and available: nothing is broadcast) until the client resumes or
  the resumption timeout ends the session for good.
- ``ResumptionRegistry``: resumption tokens, detached sessions and their timers, shared
  by every client listener of a server.
- ``bounce_unacked``: what becomes of stanzas a session never acknowledged when it
  ends for good: messages go through delivery again (another resource, else offline
  storage), with the original delivery time in a XEP-0203 ``<delay/>``; IQ requests get
  ``service-unavailable`` back to their sender; presence and chat states are state and
  are dropped.

The session manager sees only ``IClientSession`` handles and is told of a resumption by
``ISessionManager.replace_handle``; unacknowledged stanzas return to it through
``ISessionManager.redeliver`` (messages) and ``ISessionManager.route`` (IQ errors).
"""

from __future__ import annotations

import collections
import secrets
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.c2s.csi import holdable
from tigasepy.config import StreamManagementConfig
from tigasepy.interfaces import IClientSession, ISessionManager, Protocol
from tigasepy.log_level import Logger
from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.serialize import to_xml

if TYPE_CHECKING:
    from tigasepy.c2s.protocol import ClientStream

SM = "urn:xmpp:sm:3"
MODULUS = 2 ** 32
_CARBONS = "urn:xmpp:carbons:2"
_MAM = "urn:xmpp:mam:2"
_REMEMBER_ENDED = 1000

PROTOCOLS = (
    Protocol("XEP-0198", "1.6.3", "complete",
             "acks, resumption within [c2s.stream_management] resume_timeout_s, unacknowledged "
             "stanzas re-delivered or stored offline (with delay) or bounced when a session ends; "
             "no SASL2/BIND2 inlining"),
    Protocol("XEP-0352", "1.0.0", "complete",
             "while inactive, presence updates (latest per sender) and chat-state-only messages "
             "wait for the next important stanza"),
)


def delay_stamp(seconds: float) -> str:
    """XEP-0082 date-time (UTC, milliseconds) for ``seconds`` since the epoch."""
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def add_delay(stanza: domish.Element, domain: str, when: float) -> None:
    """Add a XEP-0203 ``<delay/>`` from ``domain`` unless the stanza already carries one."""
    if next(stanza.elements(ns.DELAY, "delay"), None) is not None:
        return
    delay = stanza.addElement((ns.DELAY, "delay"))
    delay["from"] = domain
    delay["stamp"] = delay_stamp(when)


class AckState:
    """One session's stream management state (XEP-0198 section 4), moved between handles.

    ``inbound`` is the ``h`` this server reports (stanzas handled from the client);
    ``acked`` the last ``h`` the client reported; ``queue`` holds each stanza sent since
    (serialized once, with the time it was first sent), oldest first. Counters wrap at
    2**32.
    """

    __slots__ = ("owner", "jid", "token", "max_s", "inbound", "acked", "queue", "holder", "on_ack")

    def __init__(self, owner: str, jid: JID) -> None:
        self.owner = owner
        self.jid = jid
        self.token: str | None = None
        self.max_s = 0
        self.inbound = 0
        self.acked = 0
        self.queue: collections.deque[tuple[str, float]] = collections.deque()
        self.holder: Any = None
        #: Called with this state after each acknowledgement (a connection-manager
        #: process reports acknowledged stanzas to the session manager, router/link_cm.py).
        self.on_ack: Any = None

    @property
    def sent(self) -> int:
        """How many stanzas were sent (mod 2**32): the acknowledged ones plus the queue."""
        return (self.acked + len(self.queue)) % MODULUS

    @property
    def resumable(self) -> bool:
        """True when the client was granted resumption."""
        return self.token is not None

    def count_inbound(self) -> None:
        """One more stanza from the client was handled."""
        self.inbound = (self.inbound + 1) % MODULUS

    def check(self, h: int) -> bool:
        """True when ``h`` acknowledges no more than was sent."""
        return (h - self.acked) % MODULUS <= len(self.queue)

    def ack(self, h: int) -> None:
        """The client handled everything up to ``h`` (checked with ``check`` first)."""
        for _ in range((h - self.acked) % MODULUS):
            self.queue.popleft()
        self.acked = h
        if self.on_ack is not None:
            self.on_ack(self)


def parse_h(value: str | None) -> int | None:
    """An ``h`` attribute as an unsigned 32-bit integer, or None when malformed."""
    if value is None or not value.isdigit():
        return None
    h = int(value)
    return h if h < MODULUS else None


@implementer(IClientSession)
class DetachedSession:
    """A resumable session whose connection is gone: it queues what the SM sends.

    The session stays bound (presence unchanged) until the client resumes it or the
    timeout ends it; ``close`` (a resource conflict, an account removal) ends it at once.
    """

    def __init__(self, registry: "ResumptionRegistry", acks: AckState, secure: bool) -> None:
        self.registry = registry
        self.acks = acks
        self.jid = acks.jid
        self.secure = secure
        self.timer: Any = None
        self.ended = False
        acks.holder = self

    def send(self, stanza: domish.Element) -> None:
        """Queue ``stanza`` for the resumed stream (or for re-delivery when the session ends)."""
        if self.ended:
            return
        acks = self.acks
        acks.queue.append((to_xml(stanza), self.registry.clock.seconds()))
        if len(acks.queue) > self.registry.config.max_unacked:
            self.registry.log.info("{jid}: too many stanzas queued for a detached session; ending it",
                                   jid=self.jid.full())
            self.end()

    def close(self, condition: str | None = None, text: str | None = None) -> None:
        """End the session now (nothing to write: there is no connection)."""
        self.end()

    def end(self) -> None:
        """End the session for good: unbind it and bounce what was never acknowledged."""
        if self.ended:
            return
        self.ended = True
        self.registry.unpark(self)
        self.registry.finish(self, self.acks)

    def __repr__(self) -> str:
        return f"<DetachedSession {self.jid.full()} queued={len(self.acks.queue)}>"


class ResumptionRegistry:
    """Resumption tokens and detached sessions of every client listener of one server."""

    log = Logger()

    def __init__(self, sm: ISessionManager, clock: IReactorTime, config: StreamManagementConfig) -> None:
        self.sm = sm
        self.clock = clock
        self.config = config
        self._tokens: dict[str, AckState] = {}
        self._detached: collections.OrderedDict[str, DetachedSession] = collections.OrderedDict()
        self._ended: collections.OrderedDict[str, tuple[str, int]] = collections.OrderedDict()

    # -- tokens -------------------------------------------------------------------------
    def grant(self, acks: AckState, max_s: int) -> str:
        """Make ``acks`` resumable for ``max_s`` seconds after a drop; returns its token."""
        token = secrets.token_urlsafe(24)
        while token in self._tokens:
            token = secrets.token_urlsafe(24)
        acks.token = token
        acks.max_s = max_s
        self._tokens[token] = acks
        return token

    def lookup(self, token: str, owner: str) -> AckState | None:
        """The live state behind ``token`` when it belongs to the account ``owner``."""
        acks = self._tokens.get(token)
        if acks is None or acks.owner != owner:
            return None
        return acks

    def ended_h(self, token: str, owner: str) -> int | None:
        """The last ``h`` of a session of ``owner`` that ended, for ``<failed h=.../>``."""
        ended = self._ended.get(token)
        if ended is None or ended[0] != owner:
            return None
        return ended[1]

    def forget(self, acks: AckState) -> None:
        """The session of ``acks`` ended: its token no longer resumes anything."""
        token = acks.token
        if token is None or self._tokens.get(token) is not acks:
            return
        del self._tokens[token]
        self._ended[token] = (acks.owner, acks.inbound)
        while len(self._ended) > _REMEMBER_ENDED:
            self._ended.popitem(last=False)

    # -- detached sessions ----------------------------------------------------------------
    def detach(self, stream: "ClientStream", acks: AckState) -> bool:
        """Keep the session of ``stream`` (whose connection dropped) for resumption.

        Returns False when the SM no longer holds the session (the caller ends it).
        """
        detached = DetachedSession(self, acks, stream.secure)
        if not self.sm.replace_handle(stream, detached):
            acks.holder = None
            return False
        self.park(detached)
        self.log.info("{jid}: connection lost; session kept {seconds}s for resumption",
                      jid=acks.jid.full(), seconds=acks.max_s)
        return True

    def park(self, detached: DetachedSession) -> None:
        """Start the resumption timeout of ``detached``, making room within the limits."""
        acks = detached.acks
        same_account = [d for d in self._detached.values() if d.acks.owner == acks.owner]
        while same_account and len(same_account) >= self.config.max_detached_per_account:
            same_account.pop(0).end()
        while len(self._detached) >= self.config.max_detached:
            _token, oldest = next(iter(self._detached.items()))
            oldest.end()
        assert acks.token is not None
        self._detached[acks.token] = detached
        detached.timer = self.clock.callLater(acks.max_s, self._expire, detached)

    def _expire(self, detached: DetachedSession) -> None:
        detached.timer = None
        self.log.info("{jid}: not resumed in time; the session ends", jid=detached.jid.full())
        detached.end()

    def unpark(self, detached: DetachedSession) -> None:
        """``detached`` is resumed or ends: stop its timer."""
        token = detached.acks.token
        if token is not None and self._detached.get(token) is detached:
            del self._detached[token]
        if detached.timer is not None and detached.timer.active():
            detached.timer.cancel()
        detached.timer = None

    def detached_count(self) -> int:
        """How many sessions wait for resumption."""
        return len(self._detached)

    # -- the end of a session -------------------------------------------------------------
    def finish(self, handle: IClientSession, acks: AckState | None) -> None:
        """End the session held by ``handle`` for good and bounce its unacknowledged stanzas."""
        self.sm.unbind(handle)
        if acks is None:
            return
        self.forget(acks)
        acks.holder = None
        queue, acks.queue = acks.queue, collections.deque()
        if queue:
            bounce_unacked(self.sm, acks.jid, queue, self.log)

    def close_all(self) -> None:
        """End every detached session (server shutdown); cancels their timers."""
        for detached in list(self._detached.values()):
            detached.end()


def _is_copy(stanza: domish.Element) -> bool:
    """Carbon copies and archive results repeat what lives elsewhere: never re-deliver them."""
    for child in stanza.elements():
        if child.uri == _CARBONS and child.name in ("sent", "received"):
            return True
        if child.uri == _MAM and child.name == "result":
            return True
    return False


def bounce_unacked(sm: ISessionManager, jid: JID, queue: Iterable[tuple[str, float]], log: Any) -> None:
    """Treat what a session never acknowledged as sent to an unavailable resource (XEP-0198 4).

    Messages are delivered again (RFC 6121 rules: a full JID that is gone falls back to
    the bare JID, so another resource or offline storage), stamped with their first
    delivery time; IQ requests get ``service-unavailable`` back to their sender. Presence,
    chat states, IQ results, errors, groupchat messages and copies (carbons, archive
    results) are dropped.
    """
    full = jid.full()
    bare = jid.userhost()
    for xml, first_sent in queue:
        try:
            stanza = parse_stanza(xml)
            kind = stanza.getAttribute("type")
            if stanza.name == "message":
                if kind in ("error", "groupchat") or _is_copy(stanza) or holdable(stanza) == "chatstate":
                    continue   # (a chat state is stale by now)
                if not stanza.getAttribute("to"):
                    stanza["to"] = full
                add_delay(stanza, jid.host, first_sent)
                sm.redeliver(stanza)
            elif stanza.name == "iq" and kind in ("get", "set"):
                sender = stanza.getAttribute("from")
                if not sender or sender == bare or sender == jid.host:
                    continue  # the server or the account itself (roster pushes, pings)
                reply = StanzaError("service-unavailable", "The recipient's session ended").to_response(stanza)
                reply["from"] = stanza.getAttribute("to") or full
                sm.route(reply)
        except Exception:
            log.failure("could not bounce an unacknowledged stanza of {jid}", jid=full)
