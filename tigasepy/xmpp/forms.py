"""Data forms (XEP-0004): checking a submitted form against the form the server sent.

Forms are wokkel's ``data_form.Form`` (imported through ``tigasepy.compat``); this
module adds the server side's validation of a submission: the FORM_TYPE must be the
one offered, required fields must carry a value, and every value must fit its
field's type (one value for single-valued types, JIDs for ``jid-*``, ``0/1/true/false``
for ``boolean``, one of the options for ``list-*``). Fields the form did not offer
are ignored.
"""

from __future__ import annotations

from typing import Any

from twisted.words.xish import domish

from tigasepy.compat import data_form
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.jid import InvalidFormat, parse_jid

Form = data_form.Form
Field = data_form.Field

_MULTI = frozenset({"jid-multi", "list-multi", "text-multi", "hidden"})


class FormError(ValueError):
    """A submitted form that does not fit the form offered; the message says why."""


def find_form(parent: domish.Element) -> domish.Element | None:
    """The first ``<x xmlns='jabber:x:data'/>`` child of ``parent``, or None."""
    for child in parent.elements(ns.DATA_FORMS, "x"):
        return child
    return None


def parse_submission(element: domish.Element | None, offered: Form) -> dict[str, Any]:
    """The values of a submitted form, checked against the ``offered`` form.

    Args:
        element: the submitted ``<x/>`` (type ``submit``; ``cancel`` is read as
            ``submit`` as XEP-0050 asks), or None when none was sent.
        offered: the form the server sent (its fields are the definitions).

    Returns:
        field var -> value: a ``str``, ``JID`` or ``bool`` for single-valued types, a
        list for ``*-multi`` types; None for an optional field left out.

    Raises:
        FormError: no form, a malformed one, or a value that does not fit.
    """
    if element is None:
        raise FormError("a completed data form is required")
    if element.getAttribute("type") not in ("submit", "cancel"):
        raise FormError("the data form must be of type 'submit'")
    try:
        submitted = Form.fromElement(element)
    except data_form.Error as e:
        raise FormError(f"malformed data form ({type(e).__name__})") from None
    form_type = submitted.formNamespace
    if form_type is None and "FORM_TYPE" in submitted.fields:    # sent without type='hidden'
        form_type = str(submitted.fields["FORM_TYPE"].value or "") or None
    if offered.formNamespace and form_type not in (None, offered.formNamespace):
        raise FormError(f"FORM_TYPE must be {offered.formNamespace}")
    values: dict[str, Any] = {}
    for var, definition in offered.fields.items():
        if definition.fieldType == "fixed":
            continue
        field = submitted.fields.get(var)
        raw = [str(v) for v in field.values] if field is not None else []
        if definition.fieldType not in ("text-multi", "text-private", "text-single"):
            raw = [v.strip() for v in raw]
        present = [v for v in raw if v != ""]
        if definition.required and not present:
            raise FormError(f"field '{var}' is required")
        values[var] = _typed(var, definition, raw, present)
    return values


def _typed(var: str, definition: Field, raw: list[str], present: list[str]) -> Any:
    kind = definition.fieldType or "text-single"
    if kind not in _MULTI and len(raw) > 1:
        raise FormError(f"field '{var}' takes one value")
    if kind == "boolean":
        if not present:
            return None
        value = present[0].lower()
        if value not in ("0", "1", "false", "true"):
            raise FormError(f"field '{var}' must be a boolean")
        return value in ("1", "true")
    if kind in ("jid-single", "jid-multi"):
        jids = []
        for value in present:
            try:
                jid = parse_jid(value)
            except InvalidFormat:
                jid = None
            if jid is None:
                raise FormError(f"field '{var}': {value!r} is not a valid JID")
            jids.append(jid)
        if kind == "jid-multi":
            return jids
        return jids[0] if jids else None
    if kind in ("list-single", "list-multi") and definition.options:
        allowed = {str(option.value) for option in definition.options}
        for value in present:
            if value not in allowed:
                raise FormError(f"field '{var}': {value!r} is not one of the options")
    if kind in _MULTI:
        return present if kind != "text-multi" else raw
    return raw[0] if raw else None
