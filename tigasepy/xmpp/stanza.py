"""Small constructors and views for stanzas (domish elements)."""

from __future__ import annotations

from twisted.words.xish import domish

STANZA_NAMES = frozenset({"message", "presence", "iq"})


def iq_result(request: domish.Element, payload: domish.Element | None = None) -> domish.Element:
    """The ``result`` reply to an IQ ``request``, optionally carrying ``payload``."""
    reply = domish.Element((None, "iq"))
    reply["type"] = "result"
    if request.getAttribute("id") is not None:
        reply["id"] = request["id"]
    if request.getAttribute("from"):
        reply["to"] = request["from"]
    if request.getAttribute("to"):
        reply["from"] = request["to"]
    if payload is not None:
        reply.addChild(payload)
    return reply


def first_child(stanza: domish.Element) -> domish.Element | None:
    """The first element child of ``stanza`` (an IQ's payload), or None."""
    for child in stanza.children:
        if isinstance(child, domish.Element):
            return child
    return None


def element_children(stanza: domish.Element) -> list[domish.Element]:
    """All element children of ``stanza``."""
    return [c for c in stanza.children if isinstance(c, domish.Element)]


def copy_element(element: domish.Element) -> domish.Element:
    """A deep copy of ``element`` (so that per-recipient changes never leak)."""
    new = domish.Element((element.uri, element.name), element.defaultUri, dict(element.attributes),
                         dict(element.localPrefixes))
    for child in element.children:
        if isinstance(child, domish.Element):
            new.addChild(copy_element(child))
        else:
            new.addContent(child)
    return new
