"""Presence subscription states and their transitions (RFC 6121 sections 3.1-3.4 and appendix A).

A roster row (``RosterItem``) holds one of the nine RFC 6121 states: the
subscription (none/to/from/both), a pending outbound request (``ask``) and a
pending inbound request (``pending_in``), plus a subscription pre-approval
(``approved``, section 3.4). ``outbound`` and ``inbound`` are pure functions from
the current row and a subscription stanza type to a ``Transition`` that says what
the new row is and what the server must do: forward the stanza, push the item to
the owner's interested resources, answer on the owner's behalf, or start / stop
sending the owner's presence to the contact.

The module also holds the small pieces the roster and presence extensions share:
the ``<item/>`` element of a row, roster pushes, and a per-owner job queue.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.words.xish import domish

from tigasepy.storage.interfaces import RosterItem
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.stanza import copy_element

if TYPE_CHECKING:
    from tigasepy.sm.host import ExtensionHost

SUBSCRIPTION_TYPES = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed"})
"""The presence types that act on subscriptions (RFC 6121 section 3)."""

AVAILABLE = "available"
"""``Transition.share``: send the owner's current presence to the contact."""
UNAVAILABLE = "unavailable"
"""``Transition.share``: tell the contact the owner's resources are unavailable."""

_TO = frozenset({"to", "both"})      # the owner receives the contact's presence
_FROM = frozenset({"from", "both"})  # the contact receives the owner's presence


def subscribed_to(item: RosterItem | None) -> bool:
    """True when the owner has a subscription to the contact's presence (to/both)."""
    return item is not None and item.subscription in _TO


def subscribed_from(item: RosterItem | None) -> bool:
    """True when the contact has a subscription to the owner's presence (from/both)."""
    return item is not None and item.subscription in _FROM


def state_name(item: RosterItem | None) -> str:
    """The RFC 6121 appendix A name of the state of ``item`` ("None + Pending Out/In", "Both", ...)."""
    if item is None:
        return "None"
    base = item.subscription.capitalize()
    pending = [p for p, on in (("Out", item.ask), ("In", item.pending_in)) if on]
    return f"{base} + Pending {'/'.join(pending)}" if pending else base


@dataclass(frozen=True)
class Transition:
    """What one subscription stanza does to one roster row.

    Attributes:
        before: the row as it was (None: there was none).
        after: the row to keep (None: keep no row).
        forward: outbound, route the stanza to the contact; inbound, deliver it to the owner.
        reply: inbound only, the presence type the server sends back on the owner's
            behalf (``subscribed`` for an approved or pre-approved request).
        share: ``available`` to send the presence of the owner's available resources to
            the contact (they are now subscribed), ``unavailable`` to withdraw it.
    """

    before: RosterItem | None
    after: RosterItem | None
    forward: bool
    reply: str | None = None
    share: str | None = None

    @property
    def changed(self) -> bool:
        """True when the stored row must be written or deleted."""
        return self.before != self.after

    @property
    def push(self) -> bool:
        """True when the owner's interested resources must get a roster push of ``after``."""
        return self.after is not None and self.after.in_roster and _view(self.before) != _view(self.after)


def _view(item: RosterItem | None) -> tuple[Any, ...] | None:
    """What a client sees of a row (pending-in is never shown, hidden rows not at all)."""
    if item is None or not item.in_roster:
        return None
    return (item.contact, item.name, item.groups, item.subscription, item.ask, item.approved)


def _settle(before: RosterItem | None, new: RosterItem, forward: bool, reply: str | None = None,
            share: str | None = None) -> Transition:
    """Build the transition, dropping a hidden row that no longer remembers anything."""
    keep: RosterItem | None = new
    if (not new.in_roster and not new.pending_in and not new.ask and not new.approved
            and new.subscription == "none"):
        keep = None
    return Transition(before, keep, forward, reply, share)


def _unchanged(before: RosterItem | None, forward: bool = False, reply: str | None = None,
               share: str | None = None) -> Transition:
    return Transition(before, before, forward, reply, share)


def outbound(item: RosterItem | None, kind: str, contact: str, pre_approval: bool = True) -> Transition:
    """The owner's client sent a subscription stanza of ``kind`` to ``contact`` (RFC 6121 A.3).

    ``subscribe`` and ``unsubscribe`` are always routed, so that a contact whose server
    lost state can answer again; ``subscribed`` and ``unsubscribed`` only when they
    change something the contact's server must learn. ``subscribed`` with nothing
    pending is a pre-approval (3.4) when ``pre_approval`` is on, and is never routed.
    """
    if kind not in SUBSCRIPTION_TYPES:
        raise ValueError(f"not a subscription type: {kind!r}")
    current = item if item is not None else RosterItem(contact=contact, in_roster=False)
    sub = current.subscription
    if kind == "subscribe":
        new = dataclasses.replace(current, in_roster=True, ask=current.ask or sub in ("none", "from"))
        return _settle(item, new, forward=True)
    if kind == "unsubscribe":
        new = dataclasses.replace(current, ask=False, subscription={"to": "none", "both": "from"}.get(sub, sub))
        return _settle(item, new, forward=True)
    if kind == "subscribed":
        if sub in _FROM:
            return _unchanged(item)
        if current.pending_in:
            new = dataclasses.replace(current, subscription="from" if sub == "none" else "both",
                                      pending_in=False, approved=False, in_roster=True)
            return _settle(item, new, forward=True, share=AVAILABLE)
        if not pre_approval:
            return _unchanged(item)
        return _settle(item, dataclasses.replace(current, approved=True, in_roster=True), forward=False)
    # unsubscribed: cancel the contact's subscription, deny its request, or drop a pre-approval
    if sub in _FROM:
        new = dataclasses.replace(current, subscription="none" if sub == "from" else "to",
                                  pending_in=False, approved=False)
        return _settle(item, new, forward=True, share=UNAVAILABLE)
    if current.pending_in:
        return _settle(item, dataclasses.replace(current, pending_in=False, approved=False), forward=True)
    if current.approved:
        return _settle(item, dataclasses.replace(current, approved=False), forward=False)
    return _unchanged(item)


def inbound(item: RosterItem | None, kind: str, contact: str) -> Transition:
    """A subscription stanza of ``kind`` arrived from ``contact`` for the owner (RFC 6121 A.2).

    A ``subscribe`` from a contact that already has a subscription, or that the owner
    pre-approved, is answered with ``subscribed`` and not delivered. A new request is
    remembered as pending-in, on a hidden row when the contact is not in the roster.
    """
    if kind not in SUBSCRIPTION_TYPES:
        raise ValueError(f"not a subscription type: {kind!r}")
    current = item if item is not None else RosterItem(contact=contact, in_roster=False)
    sub = current.subscription
    if kind == "subscribe":
        if sub in _FROM:
            return _unchanged(item, reply="subscribed", share=AVAILABLE)
        if current.approved:
            new = dataclasses.replace(current, subscription="from" if sub == "none" else "both",
                                      approved=False, pending_in=False)
            return _settle(item, new, forward=False, reply="subscribed", share=AVAILABLE)
        if current.pending_in:
            return _unchanged(item)
        return _settle(item, dataclasses.replace(current, pending_in=True), forward=True)
    if kind == "unsubscribe":
        if sub in _FROM:
            new = dataclasses.replace(current, subscription="none" if sub == "from" else "to", pending_in=False)
            return _settle(item, new, forward=True, share=UNAVAILABLE)
        if current.pending_in:
            return _settle(item, dataclasses.replace(current, pending_in=False), forward=True)
        return _unchanged(item)
    if kind == "subscribed":
        if current.ask and sub in ("none", "from"):
            new = dataclasses.replace(current, subscription="to" if sub == "none" else "both", ask=False)
            return _settle(item, new, forward=True)
        return _unchanged(item)
    # unsubscribed: the contact cancelled the owner's subscription or denied the request
    if sub in _TO:
        new = dataclasses.replace(current, subscription="none" if sub == "to" else "from", ask=False)
        return _settle(item, new, forward=True)
    if current.ask:
        return _settle(item, dataclasses.replace(current, ask=False), forward=True)
    return _unchanged(item)


def removal_notices(item: RosterItem) -> tuple[str, ...]:
    """The presence types to send a contact whose row is removed (RFC 6121 2.5.2).

    ``unsubscribe`` when the owner is subscribed to the contact or asked to be,
    ``unsubscribed`` when the contact is subscribed to the owner or asked to be.
    """
    out = []
    if item.subscription in _TO or item.ask:
        out.append("unsubscribe")
    if item.subscription in _FROM or item.pending_in:
        out.append("unsubscribed")
    return tuple(out)


# -- shared stanza pieces -------------------------------------------------------------------

def item_element(item: RosterItem) -> domish.Element:
    """The ``<item/>`` of ``item`` as a roster result or push carries it (RFC 6121 2.1.2)."""
    element = domish.Element((ns.ROSTER, "item"))
    element["jid"] = item.contact
    if item.name:
        element["name"] = item.name
    element["subscription"] = item.subscription
    if item.ask:
        element["ask"] = "subscribe"
    if item.approved:
        element["approved"] = "true"
    for group in item.groups:
        element.addElement("group", content=group)
    return element


def removed_element(contact: str) -> domish.Element:
    """The ``<item subscription='remove'/>`` pushed when ``contact`` left the roster."""
    element = domish.Element((ns.ROSTER, "item"))
    element["jid"] = contact
    element["subscription"] = "remove"
    return element


def presence(kind: str | None, sender: str, to: str | None) -> domish.Element:
    """A payload-free presence stanza of ``kind`` (None: available)."""
    stanza = domish.Element((None, "presence"))
    if kind is not None and kind != AVAILABLE:
        stanza["type"] = kind
    stanza["from"] = sender
    if to is not None:
        stanza["to"] = to
    return stanza


def push(host: "ExtensionHost", owner: str, item: domish.Element, ver: str | None = None) -> int:
    """Send a roster push of ``item`` to every interested resource of ``owner`` (RFC 6121 2.1.6).

    ``ver`` is the roster version after the change (RFC 6121 2.6.3, XEP-0237).
    Returns how many resources got it.
    """
    count = 0
    for session in host.sessions(owner):
        if not session.interested:
            continue
        iq = domish.Element((None, "iq"))
        iq["type"] = "set"
        iq["id"] = "push-" + secrets.token_hex(6)
        iq["to"] = session.full
        query = iq.addElement((ns.ROSTER, "query"))
        if ver is not None:
            query["ver"] = ver
        query.addChild(copy_element(item))
        session.send(iq)
        count += 1
    return count


async def versioned_push(host: "ExtensionHost", store: Any, owner: str, item: domish.Element) -> int:
    """``push`` stamped with ``owner``'s roster version from ``store`` (an ``IRosterStore``).

    Call it right after the change was stored, inside the account's serialized job,
    so that pushes carry unique versions in the order of the changes (RFC 6121
    2.6.3). Reads the version only when some resource will get the push.
    """
    if not any(session.interested for session in host.sessions(owner)):
        return 0
    version = await store.get_version(owner)
    return push(host, owner, item, ver=str(version))
