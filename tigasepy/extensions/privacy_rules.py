"""Privacy list rules (XEP-0016 section 2) and the blocklist view of them (XEP-0191 section 4).

Pure logic, no host: parsing and writing ``<item/>`` elements, evaluating a list
against a stanza, and reading or editing the blocked JIDs a list holds.

Evaluation: a list's items are tried in ascending ``order``; the first one that
applies to the stanza's kind and matches the peer decides (allow or deny); no
match allows. A ``jid`` item matches when its value is one of the peer's forms
``user@domain/resource``, ``user@domain``, ``domain/resource``, ``domain``
(XEP-0016 2.1, XEP-0191 section 5). ``group`` and ``subscription`` items need the
owner's roster entry for the peer; ``CompiledList.match`` says when it needs one.

Kinds: inbound, a message is ``message``, an IQ ``iq``, a presence notification
(no type, or ``unavailable``) ``presence-in``; outbound, a presence notification
is ``presence-out``. Any other stanza (outbound messages and IQs, subscriptions,
probes) has no kind and only items naming no kind (which cover every stanza in
both directions) apply to it.

The blocklist (XEP-0191) is the set of ``jid`` items with action ``deny`` and no
kind in the default list; blocking puts new items first (XEP-0191 section 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish

from tigasepy.storage.interfaces import PRIVACY_KINDS, PrivacyItem, RosterItem
from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.jid import parse_jid

PRIVACY = "jabber:iq:privacy"
BLOCKING = "urn:xmpp:blocking"
BLOCKING_ERRORS = "urn:xmpp:blocking:errors"

MAX_ORDER = 2 ** 32 - 1
_TYPES = frozenset({"jid", "group", "subscription"})
_SUBSCRIPTIONS = frozenset({"none", "to", "from", "both"})
_ACTIONS = frozenset({"allow", "deny"})
_NOTIFICATION_TYPES = (None, "unavailable")


@dataclass(frozen=True)
class RosterView:
    """What group and subscription items look at: the owner's roster entry for the peer."""

    subscription: str = "none"
    groups: frozenset[str] = frozenset()

    @classmethod
    def of(cls, item: RosterItem | None) -> "RosterView":
        """The view of a roster row (None, or a hidden row: subscription none, no groups)."""
        if item is None or not item.in_roster:
            return cls()
        return cls(item.subscription, frozenset(item.groups))


#: ``CompiledList.match`` result when a group or subscription item needs the roster.
UNDECIDED = object()


def peer_forms(jid: JID) -> tuple[str, ...]:
    """The JID forms a ``jid`` item may name to match ``jid`` (most specific first)."""
    forms = []
    if jid.user is not None:
        if jid.resource is not None:
            forms.append(jid.full())
        forms.append(jid.userhost())
    if jid.resource is not None:
        forms.append(f"{jid.host}/{jid.resource}")
    forms.append(jid.host)
    return tuple(forms)


def inbound_kind(stanza: domish.Element) -> str | None:
    """The XEP-0016 kind of a stanza arriving for the owner (None: only kind-less items apply)."""
    name = stanza.name
    if name == "message":
        return "message"
    if name == "iq":
        return "iq"
    if name == "presence" and stanza.getAttribute("type") in _NOTIFICATION_TYPES:
        return "presence-in"
    return None


def outbound_kind(stanza: domish.Element) -> str | None:
    """The XEP-0016 kind of a stanza the owner sends (None: only kind-less items apply)."""
    if stanza.name == "presence" and stanza.getAttribute("type") in _NOTIFICATION_TYPES:
        return "presence-out"
    return None


def is_block_item(item: PrivacyItem) -> bool:
    """True for an item the blocklist shows: ``jid``, ``deny``, every stanza kind."""
    return item.type == "jid" and item.action == "deny" and not item.kinds


class CompiledList:
    """A privacy list ready for evaluation: jid items indexed by value."""

    __slots__ = ("items", "_by_jid", "_others")

    def __init__(self, items: Iterable[PrivacyItem]) -> None:
        self.items: tuple[PrivacyItem, ...] = tuple(sorted(items, key=lambda i: i.order))
        self._by_jid: dict[str, list[int]] = {}
        others = []
        for position, item in enumerate(self.items):
            if item.type == "jid" and item.value is not None:
                self._by_jid.setdefault(item.value, []).append(position)
            else:
                others.append(position)
        self._others = tuple(others)

    def match(self, kind: str | None, forms: Sequence[str],
              roster: RosterView | None = None) -> "PrivacyItem | None | object":
        """The deciding item for a stanza of ``kind`` with a peer of ``forms``, or None (allow).

        Without ``roster``, returns ``UNDECIDED`` when a group or subscription item
        would have to be checked first.
        """
        positions = list(self._others)
        for form in forms:
            found = self._by_jid.get(form)
            if found:
                positions.extend(found)
        if len(positions) > 1:
            positions.sort()
        for position in positions:
            item = self.items[position]
            if item.kinds and kind not in item.kinds:
                continue
            if item.type == "group" or item.type == "subscription":
                if roster is None:
                    return UNDECIDED
                if item.type == "group" and item.value not in roster.groups:
                    continue
                if item.type == "subscription" and item.value != roster.subscription:
                    continue
            return item
        return None

    def denies(self, kind: str | None, jid: JID, roster: RosterView) -> bool:
        """True when the list denies a stanza of ``kind`` with peer ``jid``."""
        item = self.match(kind, peer_forms(jid), roster)
        return isinstance(item, PrivacyItem) and item.action == "deny"


# -- the protocol elements --------------------------------------------------------------------

def parse_item(element: domish.Element) -> PrivacyItem:
    """A privacy ``<item/>`` as a ``PrivacyItem`` (the ``jid`` value prepared).

    Raises:
        StanzaError: ``bad-request`` for a missing or invalid action, order, type or
            value, or an unknown child element.
    """
    action = element.getAttribute("action")
    if action not in _ACTIONS:
        raise StanzaError("bad-request", "An item's action must be allow or deny")
    order_text = element.getAttribute("order") or ""
    if not order_text.isdigit() or not order_text.isascii() or int(order_text) > MAX_ORDER:
        raise StanzaError("bad-request", "An item's order must be an unsigned 32-bit integer")
    type_ = element.getAttribute("type")
    value = element.getAttribute("value")
    if type_ is None:
        value = None
    elif type_ not in _TYPES:
        raise StanzaError("bad-request", "An item's type must be jid, group or subscription")
    elif not value:
        raise StanzaError("bad-request", "An item with a type needs a value")
    elif type_ == "jid":
        value = prepared_jid(value, "bad-request")
    elif type_ == "subscription" and value not in _SUBSCRIPTIONS:
        raise StanzaError("bad-request", "A subscription value is none, to, from or both")
    kinds = set()
    for child in element.elements():
        if child.name not in PRIVACY_KINDS or child.uri not in (PRIVACY, None):
            raise StanzaError("bad-request", f"Unknown item child {child.name!r}")
        kinds.add(child.name)
    return PrivacyItem(order=int(order_text), action=action, type=type_, value=value,
                       kinds=frozenset(kinds))


def parse_list(element: domish.Element, max_items: int) -> tuple[PrivacyItem, ...]:
    """The items of a ``<list/>``, checked: unique orders, at most ``max_items``.

    Raises:
        StanzaError: ``bad-request`` (a bad item or a repeated order),
            ``policy-violation`` (too many items).
    """
    items = [parse_item(child) for child in element.elements() if child.name == "item"]
    if len(items) > max_items:
        raise StanzaError("policy-violation", f"A list holds at most {max_items} items")
    if len({item.order for item in items}) != len(items):
        raise StanzaError("bad-request", "Item orders must be unique in a list")
    return tuple(sorted(items, key=lambda i: i.order))


def item_element(item: PrivacyItem) -> domish.Element:
    """The ``<item/>`` of a privacy list result."""
    element = domish.Element((PRIVACY, "item"))
    if item.type is not None:
        element["type"] = item.type
        element["value"] = item.value or ""
    element["action"] = item.action
    element["order"] = str(item.order)
    for kind in PRIVACY_KINDS:
        if kind in item.kinds:
            element.addElement(kind)
    return element


def prepared_jid(text: str, condition: str = "jid-malformed") -> str:
    """``text`` as a prepared JID string; raises ``StanzaError(condition)`` when malformed."""
    try:
        jid = parse_jid(text)
    except InvalidFormat:
        jid = None
    if jid is None:
        raise StanzaError(condition, "Not a valid JID")
    return jid.full()


def blocking_jids(element: domish.Element) -> list[str]:
    """The prepared JIDs of the ``<item jid/>`` children of a block or unblock element.

    Raises:
        StanzaError: ``bad-request`` for an item without a jid, ``jid-malformed`` for
            an invalid one.
    """
    out: list[str] = []
    for child in element.elements():
        if child.name != "item":
            continue
        raw = child.getAttribute("jid")
        if not raw:
            raise StanzaError("bad-request", "A blocking item needs a jid")
        jid = prepared_jid(raw)
        if jid not in out:
            out.append(jid)
    return out


def blocking_element(name: str, jids: Iterable[str]) -> domish.Element:
    """A ``<blocklist/>``, ``<block/>`` or ``<unblock/>`` holding ``jids``."""
    element = domish.Element((BLOCKING, name))
    for jid in jids:
        element.addElement("item")["jid"] = jid
    return element


def blocked_error() -> domish.Element:
    """The ``<blocked/>`` application condition of XEP-0191's ``not-acceptable`` errors."""
    return domish.Element((BLOCKING_ERRORS, "blocked"))


# -- the blocklist as part of a list ------------------------------------------------------------

def blocked_jids(items: Iterable[PrivacyItem]) -> list[str]:
    """The JIDs a list blocks as XEP-0191 shows them, in list order, each once."""
    out: list[str] = []
    for item in sorted(items, key=lambda i: i.order):
        if is_block_item(item) and item.value not in out:
            out.append(item.value)  # type: ignore[arg-type]
    return out


def with_blocks(items: Sequence[PrivacyItem], jids: Sequence[str]) -> tuple[PrivacyItem, ...]:
    """``items`` with a block item for each of ``jids`` not yet blocked, placed first.

    The new items take the orders just below the smallest existing one; when there
    is no room down to 0, every item is renumbered (relative order kept).
    """
    already = set(blocked_jids(items))
    new = [jid for jid in jids if jid not in already]
    if not new:
        return tuple(sorted(items, key=lambda i: i.order))
    ordered = sorted(items, key=lambda i: i.order)
    lowest = ordered[0].order if ordered else len(new)
    if lowest >= len(new):
        start = lowest - len(new)
        added = [PrivacyItem(order=start + n, action="deny", type="jid", value=jid) for n, jid in enumerate(new)]
        return tuple(added + ordered)
    added = [PrivacyItem(order=n, action="deny", type="jid", value=jid) for n, jid in enumerate(new)]
    renumbered = [PrivacyItem(order=len(new) + n, action=i.action, type=i.type, value=i.value, kinds=i.kinds)
                  for n, i in enumerate(ordered)]
    return tuple(added + renumbered)


def without_blocks(items: Sequence[PrivacyItem], jids: Iterable[str] | None) -> tuple[PrivacyItem, ...]:
    """``items`` without the block items for ``jids`` (None: without every block item)."""
    drop = None if jids is None else set(jids)
    return tuple(i for i in sorted(items, key=lambda i: i.order)
                 if not (is_block_item(i) and (drop is None or i.value in drop)))
