"""A lean serializer for stanzas (the hot path writes every stanza through it).

``domish.Element.toXml`` is general (prefixes, scoped declarations) and was the
largest cost per delivered message. Stanzas need less: an element whose ``uri``
is None belongs to the stream's content namespace, any other ``uri`` gets an
``xmlns`` where it changes. Attributes in the XML namespace keep the ``xml:``
prefix; other namespaced attributes get a declared prefix.
"""

from __future__ import annotations

from typing import Callable

from twisted.words.xish import domish

XML_NS = "http://www.w3.org/XML/1998/namespace"


def _escape_text(text: str) -> str:
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def _escape_attr(text: str) -> str:
    text = _escape_text(text)
    if "'" in text:
        text = text.replace("'", "&apos;")
    if '"' in text:
        text = text.replace('"', "&quot;")
    return text


def to_xml(element: domish.Element, content_namespace: str = "jabber:client") -> str:
    """Serialize ``element`` for a stream whose default namespace is ``content_namespace``."""
    out: list[str] = []
    _write(element, content_namespace, content_namespace, out.append)
    return "".join(out)


def _write(element: domish.Element, scope: str, content_namespace: str, w: Callable[[str], None]) -> None:
    uri = element.uri if element.uri is not None else content_namespace
    name = element.name
    w("<" + name)
    if uri != scope:
        w(" xmlns='" + _escape_attr(uri) + "'")
        scope = uri
    prefix_count = 0
    for key, value in element.attributes.items():
        if type(key) is tuple:
            ns, local = key
            if ns == XML_NS:
                w(" xml:" + local + "='" + _escape_attr(value) + "'")
            else:
                prefix_count += 1
                prefix = f"a{prefix_count}"
                w(f" xmlns:{prefix}='{_escape_attr(ns)}' {prefix}:{local}='{_escape_attr(value)}'")
        else:
            w(" " + key + "='" + _escape_attr(value) + "'")
    children = element.children
    if not children:
        w("/>")
        return
    w(">")
    for child in children:
        if type(child) is str:
            w(_escape_text(child))
        elif isinstance(child, domish.Element):
            _write(child, scope, content_namespace, w)
        else:
            w(_escape_text(str(child)))
    w("</" + name + ">")
