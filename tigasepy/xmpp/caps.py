"""Entity capabilities (XEP-0115): the verification string and the ``<c/>`` element.

``verification_string`` follows the generation method of XEP-0115 section 5.1:
identities sorted by category/type/lang and written ``category/type/lang/name<``,
then the sorted features each followed by ``<``, then the XEP-0128 forms sorted by
``FORM_TYPE`` (each: the FORM_TYPE value, then every other field by ``var`` with its
sorted values), hashed and Base64-encoded. Sorting is by code point (i;octet on
UTF-8 gives the same order).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Iterable, Sequence

from twisted.words.xish import domish

CAPS = "http://jabber.org/protocol/caps"
DATA_FORMS = "jabber:x:data"

#: XEP-0115 'hash' attribute names -> hashlib names (XEP-0115 section 10.1 and the IANA registry).
HASHES = {"sha-1": "sha1", "sha-224": "sha224", "sha-256": "sha256", "sha-384": "sha384", "sha-512": "sha512"}

Identity = Sequence[str]   # (category, type, lang, name); lang and name may be ""


def _utf8_key(text: str) -> bytes:
    return text.encode("utf-8")


def _form_type(form: domish.Element) -> str | None:
    for field in form.elements():
        if field.name == "field" and field.getAttribute("var") == "FORM_TYPE":
            values = [str(v) for v in field.elements() if v.name == "value"]
            return values[0] if values else None
    return None


def verification_string(identities: Iterable[Identity], features: Iterable[str],
                        forms: Iterable[domish.Element] = (), hash_name: str = "sha-1") -> str:
    """The XEP-0115 ``ver`` for a disco#info answer made of these parts.

    Forms without a FORM_TYPE are left out (XEP-0115 5.4 step 3.6).

    Raises:
        ValueError: ``hash_name`` is not a known XEP-0115 hash.
    """
    if hash_name not in HASHES:
        raise ValueError(f"unknown caps hash {hash_name!r}")
    parts: list[str] = []
    rows = sorted(((c, t, lang, name) for c, t, lang, name in identities),
                  key=lambda row: tuple(_utf8_key(x) for x in row[:3]))
    for category, type_, lang, name in rows:
        parts.append(f"{category}/{type_}/{lang}/{name}<")
    for var in sorted(set(features), key=_utf8_key):
        parts.append(var + "<")
    typed = [(ft, form) for form in forms if form.name == "x" and (ft := _form_type(form)) is not None]
    for form_type, form in sorted(typed, key=lambda pair: _utf8_key(pair[0])):
        parts.append(form_type + "<")
        fields = [f for f in form.elements() if f.name == "field" and f.getAttribute("var")
                  and f["var"] != "FORM_TYPE"]
        for field in sorted(fields, key=lambda f: _utf8_key(f["var"])):
            parts.append(field["var"] + "<")
            for value in sorted((str(v) for v in field.elements() if v.name == "value"), key=_utf8_key):
                parts.append(value + "<")
    digest = hashlib.new(HASHES[hash_name], "".join(parts).encode("utf-8")).digest()
    return base64.b64encode(digest).decode("ascii")


def caps_element(node: str, ver: str, hash_name: str = "sha-1") -> domish.Element:
    """The ``<c xmlns='http://jabber.org/protocol/caps'/>`` element announcing ``node`` and ``ver``."""
    element = domish.Element((CAPS, "c"))
    element["hash"] = hash_name
    element["node"] = node
    element["ver"] = ver
    return element
