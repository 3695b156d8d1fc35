"""XEP-0115 verification strings: the two known answers of section 5."""

from __future__ import annotations

import pytest

from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp.caps import caps_element, verification_string

FEATURES = ["http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info",
            "http://jabber.org/protocol/disco#items", "http://jabber.org/protocol/muc"]


def test_simple_generation_example():
    """XEP-0115 5.2: Exodus 0.9.1."""
    assert verification_string([("client", "pc", "", "Exodus 0.9.1")], FEATURES) == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_complex_generation_example_with_languages_and_a_form():
    """XEP-0115 5.3: Psi 0.11 with two languages and a softwareinfo form (order shuffled)."""
    form = parse_stanza("""<x xmlns='jabber:x:data' type='result'>
      <field var='os_version'><value>10.5.1</value></field>
      <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>
      <field var='ip_version' type='text-multi'><value>ipv6</value><value>ipv4</value></field>
      <field var='software_version'><value>0.11</value></field>
      <field var='os'><value>Mac</value></field>
      <field var='software'><value>Psi</value></field>
    </x>""")
    identities = [("client", "pc", "en", "Psi 0.11"), ("client", "pc", "el", "Ψ 0.11")]
    assert verification_string(identities, reversed(FEATURES), [form]) == "q07IKJEyjvHSyhy//CH0CxmKi8w="


def test_forms_without_form_type_are_ignored_and_hashes_are_checked():
    untyped = parse_stanza("<x xmlns='jabber:x:data' type='result'><field var='a'><value>b</value></field></x>")
    plain = verification_string([("server", "im", "", "")], ["urn:x"])
    assert verification_string([("server", "im", "", "")], ["urn:x"], [untyped]) == plain
    assert verification_string([("server", "im", "", "")], ["urn:x"], hash_name="sha-256") != plain
    with pytest.raises(ValueError):
        verification_string([], [], hash_name="md5")


def test_caps_element():
    element = caps_element("https://example.org/caps", "abc=")
    assert (element.uri, element.name, element["hash"], element["node"], element["ver"]) == (
        "http://jabber.org/protocol/caps", "c", "sha-1", "https://example.org/caps", "abc=")
