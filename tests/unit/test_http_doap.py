"""The [http] protocols and the upload component's are in tigasepy.doap at the same versions."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from tigasepy.http import PROTOCOLS
from tigasepy.http.upload import UploadComponent

DOAP = Path(__file__).resolve().parents[2] / "tigasepy.doap"
_XMPP = "{https://linkmauve.fr/ns/xmpp-doap#}"
_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}resource"


def test_http_protocols_in_doap() -> None:
    tree = ET.parse(DOAP)
    xeps = {}
    for supported in tree.iter(f"{_XMPP}SupportedXep"):
        number = supported.find(f"{_XMPP}xep").get(_RDF).rsplit("xep-", 1)[1][:4]
        since = supported.find(f"{_XMPP}since")
        xeps[f"XEP-{number}"] = (supported.find(f"{_XMPP}version").text.strip(),
                                 since.text.strip() if since is not None else "")
    rfcs = {e.get(_RDF) for e in tree.iter("{http://usefulinc.com/ns/doap#}implements") if e.get(_RDF)}
    for protocol in PROTOCOLS + UploadComponent.protocols:
        if protocol.spec.startswith("RFC"):
            assert f"https://www.rfc-editor.org/info/rfc{protocol.spec[4:]}" in rfcs
        else:
            assert xeps[protocol.spec] == (protocol.version, "0.2.0"), protocol.spec
