"""The SM's record of one bound resource, wrapping the connection manager's handle."""

from __future__ import annotations

from typing import Any

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from tigasepy.interfaces import IClientSession

#: ``directed`` of a session that sent no directed presence (most): shared, replaced by a
#: set on the first one.
NO_DIRECTED: frozenset[str] = frozenset()


class BoundSession:
    """A bound resource: its handle, its presence state and per-extension data.

    ``available`` and ``priority`` follow the last broadcast presence (RFC 6121 4.2);
    ``interested`` is True once the client requested its roster (roster pushes go only
    to interested resources, RFC 6121 2.1.6); ``directed`` holds the JIDs that got
    directed presence (they get unavailable when the session ends, RFC 6121 4.6.3); it is
    the shared empty ``NO_DIRECTED`` until the first one (assign a set to change it).
    """

    __slots__ = ("handle", "jid", "bare", "resource", "available", "priority", "presence",
                 "interested", "directed", "data", "__weakref__")

    def __init__(self, handle: IClientSession, jid: JID) -> None:
        self.handle = handle
        self.jid = jid
        self.bare: str = jid.userhost()
        self.resource: str = jid.resource or ""
        self.available = False
        self.priority = 0
        self.presence: domish.Element | None = None
        self.interested = False
        self.directed: set[str] | frozenset[str] = NO_DIRECTED
        self.data: dict[str, Any] = {}

    @property
    def full(self) -> str:
        """The full JID as a string."""
        return self.jid.full()

    def send(self, stanza: domish.Element) -> None:
        """Write ``stanza`` to this session's client."""
        self.handle.send(stanza)

    def __repr__(self) -> str:
        return f"<BoundSession {self.full} available={self.available} priority={self.priority}>"
