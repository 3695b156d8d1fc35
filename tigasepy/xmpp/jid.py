"""XMPP addresses (RFC 7622) without a process-wide intern cache.

Twisted's ``internJID`` keeps every JID it ever saw in a module dict; we only use
its parsing and preparation (stringprep) and keep no state.
"""

from __future__ import annotations

from twisted.words.protocols.jabber.jid import JID, InvalidFormat

__all__ = ["JID", "InvalidFormat", "parse_jid", "bare", "domain_of"]

MAX_PART_BYTES = 1023  # RFC 7622 section 3: each part at most 1023 octets


def parse_jid(text: str | None) -> JID | None:
    """Parse and prepare ``text`` as a JID.

    Returns None for an empty value; raises ``InvalidFormat`` for a malformed one or
    one whose parts exceed the RFC 7622 length limit.
    """
    if not text:
        return None
    if len(text) > 3 * MAX_PART_BYTES + 2:
        raise InvalidFormat("JID too long")
    jid = JID(text)
    for part in (jid.user, jid.host, jid.resource):
        if part is not None and len(part.encode("utf-8")) > MAX_PART_BYTES:
            raise InvalidFormat("JID part too long")
    return jid


def bare(jid: JID) -> str:
    """The bare form (``user@host`` or ``host``) of ``jid`` as a string."""
    return jid.userhost()


def domain_of(address: str) -> str:
    """The domain part of a JID string (``user@domain/resource`` -> ``domain``), unprepared."""
    head = address.split("/", 1)[0]
    return head.rpartition("@")[2]
