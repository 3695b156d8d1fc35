"""Message Carbons (XEP-0280 1.0.1, urn:xmpp:carbons:2).

A resource turns carbons on with ``<enable/>`` and off with ``<disable/>`` (IQ set
to its own account; repeating either is fine); the flag lives in the session.

Sent: a message a local client sends that is eligible (below) is copied, wrapped
in ``<sent><forwarded/></sent>``, to every other carbons-enabled resource of the
sender, whether or not the sending resource enabled carbons; the copy carries the
sender's archive ``<stanza-id/>`` when MAM archived it (XEP-0313 section 3.5).
Received: an eligible message delivered to a local account is copied, wrapped in
``<received><forwarded/></received>``, to every carbons-enabled resource of the
account that did not get the original. Messages kept offline, and messages
delivered again after a resumable session ended (XEP-0198), get no copies.

Eligible (section 6.1, except the rule on errors, which would need the original
messages remembered; so ``urn:xmpp:carbons:rules:0`` is not advertised): not
``<private xmlns='urn:xmpp:carbons:2'/>`` or ``<no-copy xmlns='urn:xmpp:hints'/>``,
not groupchat, not error, not itself a carbon; and of type chat, or normal with a
body, or carrying a receipt (XEP-0184), chat state (XEP-0085) or marker (XEP-0333),
or a direct (XEP-0249) or mediated MUC invitation. A private message received from
a MUC occupant (full JID, ``muc#user`` payload) is not copied; one sent to an
occupant is. The client's own stanzas are copied as they are: nothing is stripped.
"""

from __future__ import annotations

from typing import Any

from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.extensions.mam import ARCHIVE_IDS, NS_FORWARD, stanza_id
from tigasepy.interfaces import IExtension, Protocol
from tigasepy.sm.events import (
    PASS, REDELIVERED, DeliveryEvent, MessageDelivered, MessageFromClient, StanzaEvent, Target,
)
from tigasepy.sm.host import ExtensionHost
from tigasepy.sm.session import BoundSession
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.stanza import copy_element

NS_CARBONS = "urn:xmpp:carbons:2"
NS_HINTS = "urn:xmpp:hints"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_CONFERENCE = "jabber:x:conference"
#: Payloads typically used in IM (receipts, chat states, chat markers).
IM_PAYLOADS = frozenset({"urn:xmpp:receipts", "http://jabber.org/protocol/chatstates", "urn:xmpp:chat-markers:0"})

#: The session flag (``BoundSession.data``) of a carbons-enabled resource.
ENABLED = "carbons"

#: After archiving (-50), so that sent copies carry the archive id; before delivery.
PRIORITY = -60

_CONTENT = (None, ns.CLIENT, ns.SERVER)


def eligible(stanza: domish.Element, kind: str, inbound: bool) -> bool:
    """XEP-0280 section 6.1: whether ``stanza`` (of type ``kind``) gets carbon copies."""
    if kind in ("groupchat", "error", "headline"):
        return False
    body = im_payload = invite = muc = False
    for child in stanza.elements():
        uri = child.uri
        if uri == NS_CARBONS and child.name in ("private", "sent", "received"):
            return False
        if uri == NS_HINTS and child.name == "no-copy":
            return False
        if child.name == "body" and uri in _CONTENT:
            body = True
        elif uri in IM_PAYLOADS:
            im_payload = True
        elif uri == NS_CONFERENCE and child.name == "x":
            invite = True
        elif uri == NS_MUC_USER and child.name == "x":
            muc = True
            if any(True for _ in child.elements(NS_MUC_USER, "invite")):
                invite = True
    if invite:
        return True
    if muc and inbound and "/" in stanza.getAttribute("from", ""):
        return False                     # a MUC private message: the room copies it itself
    return kind == "chat" or (kind == "normal" and body) or im_payload


def wrap(direction: str, owner: str, to: str, original: domish.Element, kind: str) -> domish.Element:
    """The carbon copy ``<message from=owner to=to><direction><forwarded>original``."""
    message = domish.Element((None, "message"))
    message["from"] = owner
    message["to"] = to
    message["type"] = kind
    container = message.addElement((NS_CARBONS, direction))
    container.addElement((NS_FORWARD, "forwarded")).addChild(original)
    return message


@implementer(IExtension)
class MessageCarbons:
    """Copies a user's one-to-one messages to all of the user's carbons-enabled resources."""

    name = "carbons"
    protocols = (
        Protocol("XEP-0280", "1.0.1", "complete",
                 "eligibility rules of 6.1 except copies of errors; urn:xmpp:carbons:rules:0 not advertised"),
        Protocol("XEP-0297", "1.0", "complete", "forwarded carbon copies"),
        Protocol("XEP-0334", "1.0.0", "partial", "no-copy honoured by carbons"),
    )
    config_type = None

    def __init__(self, config: None, host: ExtensionHost) -> None:
        self._host = host
        host.add_feature(NS_CARBONS)
        host.on_iq(NS_CARBONS, "enable", self._enable, types=("set",), targets=(Target.SELF, Target.HOST))
        host.on_iq(NS_CARBONS, "disable", self._disable, types=("set",), targets=(Target.SELF, Target.HOST))
        host.hook(MessageFromClient, self._sent, priority=PRIORITY)
        host.hook(MessageDelivered, self._received)

    def _enable(self, event: StanzaEvent) -> None:
        if event.session is not None:
            event.session.data[ENABLED] = True

    def _disable(self, event: StanzaEvent) -> None:
        if event.session is not None:
            event.session.data.pop(ENABLED, None)

    def _copies_to(self, owner: str, skip: tuple[BoundSession, ...]) -> list[BoundSession]:
        return [s for s in self._host.sessions(owner) if s.data.get(ENABLED) and s not in skip]

    def _sent(self, event: StanzaEvent) -> Any:
        session = event.session
        if session is None or event.target is Target.HOST:
            return PASS
        owner = session.bare
        targets = self._copies_to(owner, (session,))
        if not targets:
            return PASS             # nobody to copy to: skip the eligibility rules
        stanza = event.stanza
        kind = event.type
        if not eligible(stanza, kind, inbound=False):
            return PASS
        original = copy_element(stanza)
        if not original.getAttribute("to"):
            original["to"] = owner
        uid = event.extra.get(ARCHIVE_IDS, {}).get(owner)
        if uid is not None:
            original.addChild(stanza_id(owner, uid))
        for target in targets:
            target.send(wrap("sent", owner, target.full, original, kind))
        return PASS

    def _received(self, delivery: DeliveryEvent) -> None:
        if delivery.offline or not delivery.sessions:
            return
        event = delivery.event
        if event.extra.get(REDELIVERED):
            return                      # the copies went out when it first arrived
        if event.to is None:
            return
        owner = event.to.userhost()
        targets = self._copies_to(owner, delivery.sessions)
        if not targets:
            return
        stanza = event.stanza
        kind = event.type
        if not eligible(stanza, kind, inbound=True):
            return
        original = copy_element(stanza)
        for target in targets:
            target.send(wrap("received", owner, target.full, original, kind))
