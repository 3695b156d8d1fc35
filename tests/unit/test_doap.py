"""tigasepy.doap agrees with what the built-in extensions declare (ARCHITECTURE.md 6.3)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tigasepy.extensions import BUILTIN, load_class

DOAP = Path(__file__).resolve().parents[2] / "tigasepy.doap"
_XMPP = "{https://linkmauve.fr/ns/xmpp-doap#}"


def _doap_xeps() -> dict[str, str]:
    tree = ET.parse(DOAP)
    out = {}
    for supported in tree.iter(f"{_XMPP}SupportedXep"):
        xep = supported.find(f"{_XMPP}xep").get("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}resource")
        number = re.search(r"xep-(\d{4})", xep).group(1)
        out[f"XEP-{number}"] = supported.find(f"{_XMPP}version").text.strip()
    return out


def _declared() -> list[tuple[str, str, str]]:
    declared = []
    for name, (path, _enabled) in BUILTIN.items():
        for protocol in load_class(path).protocols:
            if protocol.spec.startswith("XEP-"):
                declared.append((name, protocol.spec, protocol.version))
    return declared


def test_doap_is_well_formed_and_lists_xeps():
    assert len(_doap_xeps()) >= 5


@pytest.mark.parametrize("name,spec,version", _declared())
def test_every_xep_an_extension_declares_is_in_the_doap_at_that_version(name, spec, version):
    xeps = _doap_xeps()
    assert spec in xeps, f"extension {name} implements {spec} but tigasepy.doap does not list it"
    assert xeps[spec] == version, f"{spec}: extension {name} says {version}, doap says {xeps[spec]}"
