"""XEP-0352 Client State Indication: what an inactive client's stream holds back.

While a client says it is ``<inactive/>``, its stream keeps presence updates (only the
latest per sender) and messages that carry nothing but a chat state (XEP-0085) in a
``CsiBuffer`` instead of writing them. The buffer is written out, in arrival order,
before the next stanza that matters (anything else: a message with content, an IQ, a
subscription request), when the client says ``<active/>``, or when it is full.

Nothing held is dropped: a stream that ends or is detached for resumption hands what it
held on as if it had been sent.
"""

from __future__ import annotations

from typing import Any

from twisted.words.xish import domish

CSI = "urn:xmpp:csi:0"
CHATSTATES = "http://jabber.org/protocol/chatstates"

# Children that may ride along with a chat state without making the message important.
_INCIDENTAL = frozenset({
    CHATSTATES,
    "urn:xmpp:hints",          # XEP-0334 processing hints
    "urn:xmpp:sid:0",          # XEP-0359 stanza / origin ids
    "urn:xmpp:delay",          # XEP-0203
})


def holdable(stanza: domish.Element) -> str | None:
    """How an inactive stream may hold ``stanza`` back: ``"presence"``, ``"chatstate"`` or None.

    Presence updates (available or unavailable) may be held; subscription requests and
    errors may not. A message may be held when it carries a chat state and nothing else
    of substance (no body, subject or other payload).
    """
    name = stanza.name
    if stanza.uri is not None:
        return None
    if name == "presence":
        return "presence" if stanza.getAttribute("type") in (None, "unavailable") else None
    if name != "message" or stanza.getAttribute("type") in ("error", "groupchat"):
        return None
    has_state = False
    for child in stanza.elements():
        uri = child.uri
        if uri == CHATSTATES:
            has_state = True
        elif uri not in _INCIDENTAL and not (child.name == "thread" and uri in (None, "jabber:client")):
            return None
    return "chatstate" if has_state else None


class CsiBuffer:
    """The stanzas an inactive stream holds back, in arrival order, at most ``limit``."""

    __slots__ = ("limit", "_held", "_seq")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[Any, domish.Element] = {}
        self._seq = 0

    def hold(self, stanza: domish.Element) -> bool:
        """Keep ``stanza`` back if it may wait; False when it must be written now."""
        kind = holdable(stanza)
        if kind is None:
            return False
        if kind == "presence":
            key: Any = ("presence", stanza.getAttribute("from", ""))
            self._held.pop(key, None)     # only the latest per sender, at its new place
        else:
            self._seq += 1
            key = self._seq
        self._held[key] = stanza
        return True

    @property
    def full(self) -> bool:
        """True when the buffer reached its limit (time to flush)."""
        return len(self._held) >= self.limit

    def __len__(self) -> int:
        return len(self._held)

    def drain(self) -> list[domish.Element]:
        """Everything held, oldest first; the buffer is empty afterwards."""
        out = list(self._held.values())
        self._held.clear()
        return out
