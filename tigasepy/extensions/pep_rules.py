"""Pure rules of the personal eventing service (XEP-0163 on a XEP-0060 subset): node
configuration (defaults, parsing a submitted form, publish-options preconditions) and
who may read a node. No I/O here; ``tigasepy.extensions.pep`` applies them.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from twisted.words.xish import domish

from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import StanzaError

PUBSUB = "http://jabber.org/protocol/pubsub"
PUBSUB_OWNER = PUBSUB + "#owner"
PUBSUB_EVENT = PUBSUB + "#event"
PUBSUB_ERRORS = PUBSUB + "#errors"
NODE_CONFIG = PUBSUB + "#node_config"
PUBLISH_OPTIONS = PUBSUB + "#publish-options"

ACCESS_MODELS = ("presence", "open", "whitelist")
SEND_LAST = ("never", "on_sub", "on_sub_and_presence")

#: The options a node has and their defaults (XEP-0163 section 4.4: presence access, one item).
DEFAULTS: Mapping[str, str] = {
    "pubsub#access_model": "presence",
    "pubsub#persist_items": "1",
    "pubsub#max_items": "1",
    "pubsub#notify_retract": "1",
    "pubsub#notify_delete": "1",
    "pubsub#deliver_payloads": "1",
    "pubsub#send_last_published_item": "on_sub_and_presence",
    "pubsub#publish_model": "publishers",
    "pubsub#title": "",
}

_BOOLEANS = frozenset({"pubsub#persist_items", "pubsub#notify_retract", "pubsub#notify_delete",
                       "pubsub#deliver_payloads"})
_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false"})


def pubsub_error(condition: str, app: str | None = None, text: str | None = None, **attrs: str) -> StanzaError:
    """A ``StanzaError`` with an optional ``{pubsub#errors}app`` condition (XEP-0060 section 7-8)."""
    element = None
    if app is not None:
        element = domish.Element((PUBSUB_ERRORS, app))
        for key, value in attrs.items():
            element[key] = value
    return StanzaError(condition, text, app_condition=element)


def normalize(var: str, value: str, max_items_limit: int) -> str:
    """The stored form of one option's value.

    Raises:
        StanzaError: an unknown option or a value it cannot take (``not-acceptable``).
    """
    value = value.strip()
    if var not in DEFAULTS:
        raise pubsub_error("not-acceptable", "unsupported", f"Unsupported option {var}", feature="config-node")
    if var in _BOOLEANS:
        if value in _TRUE:
            return "1"
        if value in _FALSE:
            return "0"
        raise StanzaError("not-acceptable", f"{var} must be a boolean")
    if var == "pubsub#access_model":
        if value not in ACCESS_MODELS:
            raise pubsub_error("not-acceptable", "unsupported-access-model", f"Access model {value!r}")
        return value
    if var == "pubsub#max_items":
        if value == "max":
            return str(max_items_limit)
        if not value.isdigit() or not 1 <= int(value) <= max_items_limit:
            raise StanzaError("not-acceptable", f"pubsub#max_items must be 1 to {max_items_limit} or 'max'")
        return str(int(value))
    if var == "pubsub#send_last_published_item":
        if value not in SEND_LAST:
            raise StanzaError("not-acceptable", f"pubsub#send_last_published_item: one of {', '.join(SEND_LAST)}")
        return value
    if var == "pubsub#publish_model":
        if value != "publishers":
            raise StanzaError("not-acceptable", "Only the owner publishes to a personal node")
        return value
    return value


def form_values(form: domish.Element | None) -> dict[str, list[str]]:
    """The fields of a submitted data form (``var -> values``), FORM_TYPE left out."""
    out: dict[str, list[str]] = {}
    if form is None:
        return out
    if form.getAttribute("type", "submit") not in ("submit", "result"):
        raise StanzaError("bad-request", "The form must be a submission")
    for field in form.elements(ns.DATA_FORMS, "field"):
        var = field.getAttribute("var")
        if not var or var == "FORM_TYPE":
            continue
        out[var] = [str(v) for v in field.elements(ns.DATA_FORMS, "value")]
    return out


def find_form(parent: domish.Element | None) -> domish.Element | None:
    """The ``jabber:x:data`` form inside ``parent``, or None."""
    if parent is None:
        return None
    return next(parent.elements(ns.DATA_FORMS, "x"), None)


def parse_config(form: domish.Element | None, base: Mapping[str, str], max_items_limit: int) -> dict[str, str]:
    """``base`` with the options of a submitted node configuration form applied.

    Raises:
        StanzaError: an unknown option or bad value (``not-acceptable``), a bad form (``bad-request``).
    """
    config = dict(base)
    for var, values in form_values(form).items():
        config[var] = normalize(var, values[0] if values else "", max_items_limit)
    return config


def preconditions(form: domish.Element | None, max_items_limit: int) -> dict[str, str]:
    """The publish-options of a publish request, normalized (XEP-0060 section 7.1.5).

    An option the service does not know is a precondition it cannot meet.
    """
    out: dict[str, str] = {}
    for var, values in form_values(form).items():
        try:
            out[var] = normalize(var, values[0] if values else "", max_items_limit)
        except StanzaError:
            raise pubsub_error("conflict", "precondition-not-met", f"Cannot meet {var}") from None
    return out


def unmet(config: Mapping[str, str], wanted: Mapping[str, str]) -> list[str]:
    """The options of ``wanted`` that ``config`` does not have (empty: all preconditions met)."""
    return sorted(var for var, value in wanted.items() if config.get(var, DEFAULTS.get(var)) != value)


def max_items(config: Mapping[str, str]) -> int:
    """The node's item limit."""
    return int(config.get("pubsub#max_items", DEFAULTS["pubsub#max_items"]))


def flag(config: Mapping[str, str], var: str) -> bool:
    """A boolean option of the node."""
    return config.get(var, DEFAULTS[var]) == "1"


def may_read(config: Mapping[str, str], owner: str, requester: str, subscribed_from: bool) -> bool:
    """Whether ``requester`` (a bare JID) may get the node's items and notifications.

    The owner always; ``open``: anyone; ``presence``: contacts with a from/both
    subscription; ``whitelist``: only the owner (XEP-0223's private storage).
    """
    if requester == owner:
        return True
    model = config.get("pubsub#access_model", DEFAULTS["pubsub#access_model"])
    if model == "open":
        return True
    if model == "presence":
        return subscribed_from
    return False


def access_error(config: Mapping[str, str]) -> StanzaError:
    """The error for a requester ``may_read`` refuses (XEP-0060 section 6.5.9)."""
    model = config.get("pubsub#access_model", DEFAULTS["pubsub#access_model"])
    if model == "presence":
        return pubsub_error("not-authorized", "presence-subscription-required")
    return pubsub_error("not-allowed", "closed-node")


def config_form(node: str, config: Mapping[str, str], form_type: str = "form") -> domish.Element:
    """The node configuration as a data form (XEP-0060 section 8.2)."""
    form = domish.Element((ns.DATA_FORMS, "x"))
    form["type"] = form_type
    hidden = form.addElement("field")
    hidden["var"], hidden["type"] = "FORM_TYPE", "hidden"
    hidden.addElement("value", content=NODE_CONFIG)
    kinds = {"pubsub#access_model": "list-single", "pubsub#send_last_published_item": "list-single",
             "pubsub#publish_model": "list-single", "pubsub#title": "text-single",
             "pubsub#max_items": "text-single"}
    options = {"pubsub#access_model": ACCESS_MODELS, "pubsub#send_last_published_item": SEND_LAST,
               "pubsub#publish_model": ("publishers",)}
    for var in DEFAULTS:
        field = form.addElement("field")
        field["var"] = var
        field["type"] = "boolean" if var in _BOOLEANS else kinds[var]
        for choice in options.get(var, ()):
            option = field.addElement("option")
            option.addElement("value", content=choice)
        field.addElement("value", content=config.get(var, DEFAULTS[var]))
    return form


def notify_nodes(features: Iterable[str]) -> frozenset[str]:
    """The nodes a client asks notifications for (``NODE+notify`` disco features, XEP-0163 section 4)."""
    return frozenset(f[:-len("+notify")] for f in features if f.endswith("+notify") and len(f) > 7)
