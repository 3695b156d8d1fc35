"""Stanza and stream errors as data (RFC 6120 sections 4.9 and 8.3)."""

from __future__ import annotations

from twisted.words.xish import domish

from tigasepy.xmpp import namespaces as ns

STANZA_ERROR_TYPES = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}


class StanzaError(Exception):
    """An error to answer a stanza with; raised by handlers, written by the dispatcher."""

    def __init__(self, condition: str, text: str | None = None, error_type: str | None = None,
                 app_condition: domish.Element | None = None) -> None:
        if condition not in STANZA_ERROR_TYPES:
            raise ValueError(f"unknown stanza error condition {condition!r}")
        super().__init__(condition, text)
        self.condition = condition
        self.text = text
        self.error_type = error_type or STANZA_ERROR_TYPES[condition]
        self.app_condition = app_condition

    def to_element(self) -> domish.Element:
        """The ``<error/>`` child for this error."""
        error = domish.Element((None, "error"))
        error["type"] = self.error_type
        error.addElement((ns.STANZA_ERRORS, self.condition))
        if self.text:
            error.addElement((ns.STANZA_ERRORS, "text"), content=self.text)
        if self.app_condition is not None:
            error.addChild(self.app_condition)
        return error

    def to_response(self, stanza: domish.Element) -> domish.Element:
        """An error reply to ``stanza``: addresses swapped, original payload kept."""
        reply = domish.Element((None, stanza.name))
        if stanza.getAttribute("from"):
            reply["to"] = stanza["from"]
        if stanza.getAttribute("to"):
            reply["from"] = stanza["to"]
        if stanza.getAttribute("id"):
            reply["id"] = stanza["id"]
        reply["type"] = "error"
        if stanza.name != "iq":
            for child in stanza.elements():
                reply.addChild(child)
        reply.addChild(self.to_element())
        return reply


def error_condition(stanza: domish.Element) -> str | None:
    """The defined condition of an error stanza, or None if it carries none."""
    for error in stanza.elements(None, "error"):
        for child in error.elements(ns.STANZA_ERRORS):
            if child.name != "text":
                return child.name
    return None


STREAM_ERROR_CONDITIONS = frozenset({
    "bad-format", "bad-namespace-prefix", "conflict", "connection-timeout", "host-gone",
    "host-unknown", "improper-addressing", "internal-server-error", "invalid-from",
    "invalid-namespace", "invalid-xml", "not-authorized", "not-well-formed", "policy-violation",
    "remote-connection-failed", "reset", "resource-constraint", "restricted-xml", "see-other-host",
    "system-shutdown", "undefined-condition", "unsupported-encoding", "unsupported-feature",
    "unsupported-stanza-type", "unsupported-version",
})


def stream_error(condition: str, text: str | None = None) -> domish.Element:
    """A ``<stream:error/>`` element for ``condition`` (RFC 6120 4.9.3)."""
    if condition not in STREAM_ERROR_CONDITIONS:
        raise ValueError(f"unknown stream error condition {condition!r}")
    error = domish.Element((ns.STREAMS, "error"))
    error.addElement((ns.STREAM_ERRORS, condition))
    if text:
        error.addElement((ns.STREAM_ERRORS, "text"), content=text)
    return error
