"""The stanza serializer writes XML that parses back to the same stanza, in the right namespaces."""

from __future__ import annotations

import pytest
from twisted.words.xish import domish

from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp.serialize import to_xml


def _same(a: domish.Element, b: domish.Element) -> bool:
    if (a.uri, a.name, dict(a.attributes)) != (b.uri, b.name, dict(b.attributes)):
        return False
    ac = [c for c in a.children if not isinstance(c, str) or c]
    bc = [c for c in b.children if not isinstance(c, str) or c]
    if len(ac) != len(bc):
        return False
    return all((x == y) if isinstance(x, str) else (not isinstance(y, str) and _same(x, y)) for x, y in zip(ac, bc))


@pytest.mark.parametrize("xml", [
    "<message to='a@b' type='chat'><body>hi &amp; &lt;bye&gt;</body></message>",
    "<message xml:lang='de'><body xml:lang='en'>x</body></message>",
    "<iq type='get' id='1'><query xmlns='jabber:iq:roster'><item jid='x@y' name=\"it's\"/></query></iq>",
    "<message><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' to='c@d'>"
    "<body>inner</body><x xmlns='urn:other'/></message></forwarded></message>",
    "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v'/><status/></presence>",
    "<message><body>\u00e9\u4e2d\U0001f600 quotes ' \"</body></message>",
])
def test_round_trip_through_the_parser(xml):
    stanza = parse_stanza(xml)
    assert _same(parse_stanza(to_xml(stanza)), stanza)


def test_agrees_with_domish_on_a_built_stanza():
    message = domish.Element((None, "message"))
    message["to"] = "bob@example.org"
    message.addElement("body", content="a < b")
    delay = message.addElement(("urn:xmpp:delay", "delay"))
    delay["stamp"] = "2026-01-01T00:00:00Z"
    assert _same(parse_stanza(to_xml(message)), parse_stanza(message.toXml()))


def test_stanza_level_element_nested_in_a_foreign_namespace_gets_the_content_namespace():
    outer = domish.Element(("urn:xmpp:forward:0", "forwarded"))
    inner = domish.Element((None, "message"))
    outer.addChild(inner)
    assert "<message xmlns='jabber:client'/>" in to_xml(outer)


def test_other_namespaced_attributes_are_declared():
    element = domish.Element((None, "message"))
    element[("urn:example", "flag")] = "1"
    stanza = parse_stanza(to_xml(element))
    assert stanza.attributes[("urn:example", "flag")] == "1"
