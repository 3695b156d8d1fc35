"""Last Activity (XEP-0012): server uptime and when a user last logged out.

- To the server's domain: ``seconds`` since the server (this extension) started.
- To an account's bare JID (or without ``to``, for one's own): ``seconds='0'`` while
  the account has a session; else the seconds since its last session ended, with
  the ``<status/>`` of the unavailable presence it last sent as text. Only the
  account itself and contacts with a presence subscription to it (the account's
  roster says ``from`` or ``both``) may ask; anyone else gets ``forbidden`` (section
  2). An account that does not exist gives ``service-unavailable``, one that never
  logged out ``item-not-found``.
- To a full JID: the same check, then the IQ goes to that resource's client (section 3).

The logout is recorded when an account's last session ends (the ``SessionEnded``
observer), in ``ILastActivityStore``.
"""

from __future__ import annotations

from typing import Any

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.extensions.subscription import subscribed_from
from tigasepy.interfaces import IExtension, Protocol
from tigasepy.log_level import Logger
from tigasepy.sm.events import (
    HANDLED, PASS, AccountEvent, AccountRemoved, PresenceFromClient, SessionEnded, SessionEvent,
    StanzaEvent, Target,
)
from tigasepy.sm.host import ExtensionHost
from tigasepy.storage.interfaces import ILastActivityStore, IRosterStore, LastActivity
from tigasepy.xmpp.errors import StanzaError

LAST = "jabber:iq:last"
_STATUS = "last.status"           # session.data: the <status/> of the last unavailable presence
_CONTENT_NAMESPACES = (None, "jabber:client", "jabber:server")
#: Observes presence before the presence extension (priority 0) handles it.
PRESENCE_PRIORITY = 20


def _query(seconds: float, status: str = "") -> domish.Element:
    query = domish.Element((LAST, "query"))
    query["seconds"] = str(max(0, int(seconds)))
    if status:
        query.addContent(status)
    return query


def _status_text(stanza: domish.Element) -> str:
    for child in stanza.elements():
        if child.name == "status" and child.uri in _CONTENT_NAMESPACES:
            return str(child)
    return ""


@implementer(IExtension)
class LastActivityExtension:
    """Answers ``jabber:iq:last`` and records logouts."""

    name = "last"
    protocols = (Protocol("XEP-0012", "2.0", "complete"),)
    config_type = None
    _log = Logger()

    def __init__(self, config: None, host: ExtensionHost) -> None:
        self._host = host
        self._store = host.store(ILastActivityStore)
        self._roster = host.store(IRosterStore)
        self._started = host.clock.seconds()
        host.add_feature(LAST)
        host.on_iq(LAST, "query", self._uptime, targets=(Target.HOST,))
        host.on_iq(LAST, "query", self._account, targets=(Target.SELF, Target.BARE))
        host.on_iq(LAST, "query", self._resource, targets=(Target.FULL,))
        host.hook(PresenceFromClient, self._presence, priority=PRESENCE_PRIORITY)
        host.hook(SessionEnded, self._session_ended)
        host.hook(AccountRemoved, self._forget)

    # -- IQs ----------------------------------------------------------------------------
    def _uptime(self, event: StanzaEvent) -> domish.Element:
        return _query(self._host.clock.seconds() - self._started)

    async def _account(self, event: StanzaEvent) -> domish.Element:
        owner = event.to.userhost() if event.to is not None else event.sender.userhost()
        if not await self._host.account_exists(owner):
            raise StanzaError("service-unavailable")
        await self._check_allowed(owner, event.sender)
        if self._host.sessions(owner):
            return _query(0)
        last = await self._store.get(owner)
        if last is None:
            raise StanzaError("item-not-found", "No logout recorded")
        return _query(self._host.clock.seconds() - last.stamp, last.status)

    async def _resource(self, event: StanzaEvent) -> Any:
        owner = event.to.userhost()
        session = self._host.session(event.to.full())
        if session is None:
            raise StanzaError("service-unavailable")
        await self._check_allowed(owner, event.sender)
        if self._host.session(event.to.full()) is not session:
            raise StanzaError("service-unavailable")
        session.send(event.stanza)
        return HANDLED

    async def _check_allowed(self, owner: str, requester: JID | None) -> None:
        """Raise ``forbidden`` unless ``requester`` may see ``owner``'s presence."""
        if requester is None:
            raise StanzaError("forbidden")
        contact = requester.userhost()
        if contact == owner:
            return
        if not subscribed_from(await self._roster.get_item(owner, contact)):
            raise StanzaError("forbidden", "You are not subscribed to this user's presence")

    # -- recording logouts --------------------------------------------------------------
    def _presence(self, event: StanzaEvent) -> Any:
        session = event.session
        if session is not None and event.to is None:
            kind = event.stanza.getAttribute("type")
            if kind == "unavailable":
                session.data[_STATUS] = _status_text(event.stanza)
            elif kind is None:
                session.data.pop(_STATUS, None)
        return PASS

    def _session_ended(self, event: SessionEvent) -> Any:
        session = event.session
        owner = session.bare
        if self._host.sessions(owner):
            return None        # still online on another resource
        activity = LastActivity(stamp=self._host.clock.seconds(), status=session.data.get(_STATUS, ""))
        return self._record(owner, activity)

    async def _record(self, owner: str, activity: LastActivity) -> None:
        if not await self._host.account_exists(owner):
            return             # the account was removed (its sessions end after its data went)
        await self._store.set(owner, activity)

    async def _forget(self, event: AccountEvent) -> None:
        await self._store.remove_owner(event.jid)
