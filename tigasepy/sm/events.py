"""What SM handlers receive and return: targets, hook points and stanza events.

Hook points are objects, not strings, so a misspelt one fails at import time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

if TYPE_CHECKING:
    from tigasepy.sm.session import BoundSession


class Target(enum.Enum):
    """Whom a stanza is addressed to, from the server's point of view."""

    HOST = "host"      # the server's own domain
    SELF = "self"      # no 'to', or the sender's own bare JID
    BARE = "bare"      # another account's bare JID
    FULL = "full"      # a full JID (one resource)


class Outcome(enum.Enum):
    """What a message or presence hook did with a stanza."""

    HANDLED = "handled"   # stop: the stanza was taken
    PASS = "pass"         # let the next handler (or the default) see it


HANDLED = Outcome.HANDLED
PASS = Outcome.PASS


@dataclass(frozen=True)
class HookPoint:
    """A named place in the pipeline where extensions hook handlers with a priority."""

    name: str
    doc: str = ""

    def __repr__(self) -> str:
        return f"HookPoint({self.name})"


# Stanzas from a local, bound client (``from`` stamped), before they go anywhere.
MessageFromClient = HookPoint("message/from-client", "a message sent by a local client")
PresenceFromClient = HookPoint("presence/from-client", "a presence sent by a local client")
# Stanzas arriving for a local account (from a local user, a component or a remote server).
MessageToLocal = HookPoint("message/to-local", "a message addressed to a local account")
PresenceToLocal = HookPoint("presence/to-local", "a presence addressed to a local account")
Undeliverable = HookPoint("message/undeliverable", "a message no available resource can take")
# Observers (the return value is ignored) of a message for a local account that was
# written to sessions or kept offline: carbons, archiving. Event: ``DeliveryEvent``.
MessageDelivered = HookPoint("message/delivered",
                             "a message for a local account was written to its sessions or kept offline")
# Filters (blocking, privacy lists, limits): run first, for every stanza kind (message,
# presence, IQ), before the hooks above and before the IQ table. A filter returns HANDLED when
# it took the stanza (dropped it or answered it), PASS to let it go on, or raises StanzaError
# for an error reply. With no filter registered each stage costs one dict lookup.
OutboundFilter = HookPoint(
    "filter/outbound",
    "a stanza leaving a local account for another entity: sent by one of its clients "
    "(event.session set) or on its behalf by the server through route() (event.session None)")
InboundFilter = HookPoint(
    "filter/inbound",
    "a stanza for a local account (not the server), before delivery, offline storage and the IQ table")
# Session life cycle (observers: the return value is ignored).
SessionBound = HookPoint("session/bound", "a resource was bound")
SessionEnded = HookPoint("session/ended", "a bound session ended")
InitialPresence = HookPoint("session/initial-presence", "a session sent its first available presence")
AccountRemoved = HookPoint("account/removed", "an account was deleted; drop its data")


#: ``StanzaEvent.extra`` key: True on a message delivered a second time because the session it
#: was first written to ended without acknowledging it (XEP-0198); it was archived and
#: copied (carbons) the first time.
REDELIVERED = "redelivered"


@dataclass
class StanzaEvent:
    """One stanza on its way through the session manager.

    ``session`` is the sending local session (None when the stanza came from the
    router); ``sender``/``to`` are the parsed addresses; ``target`` says whom the
    stanza is addressed to, relative to the server and the sender.
    """

    stanza: domish.Element
    sender: JID | None
    to: JID | None
    target: Target
    session: "BoundSession | None" = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        """The stanza's ``type`` attribute (``normal``/``available`` defaults applied)."""
        default = {"message": "normal", "presence": "available"}.get(self.stanza.name, "")
        return self.stanza.getAttribute("type") or default


@dataclass
class DeliveryEvent:
    """A message for a local account that was delivered (``MessageDelivered``).

    ``sessions`` are the resources it was written to; ``offline`` is True when it
    was kept in offline storage instead (then ``sessions`` is empty).
    """

    event: StanzaEvent
    sessions: "tuple[BoundSession, ...]" = ()
    offline: bool = False


@dataclass
class SessionEvent:
    """A session life-cycle event (bound, ended, initial presence)."""

    session: "BoundSession"
    stanza: domish.Element | None = None


@dataclass
class AccountEvent:
    """An account-level event (removed)."""

    jid: str
