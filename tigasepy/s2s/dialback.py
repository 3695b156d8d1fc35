"""Server Dialback (XEP-0220) with the key generation of XEP-0185.

- ``dialback_key``: the XEP-0185 key, ``HMAC-SHA256(hex(SHA256(secret)), "receiving originating
  stream-id")`` in hexadecimal. Only the authoritative server (the one that holds the
  secret) ever computes it, so the choice is ours; XEP-0185's is the recommended one.
- ``result`` / ``verify``: the ``<db:result/>`` and ``<db:verify/>`` elements, written with
  the ``db:`` prefix our stream headers declare (XEP-0220 section 2: dialback elements MUST
  use the prefix advertised on the stream header).
- ``error_condition``: the stanza error condition of a ``type='error'`` answer (XEP-0220 2.4).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from twisted.words.xish import domish

from tigasepy.xmpp import namespaces as ns

NS_DIALBACK = "jabber:server:dialback"
"""The namespace of ``<db:result/>`` and ``<db:verify/>``."""

NS_DIALBACK_FEATURE = "urn:xmpp:features:dialback"
"""The stream feature announcing dialback with error handling (XEP-0220 2.4.1)."""

_SECRET_BYTES = 32


def dialback_key(secret: bytes | str, receiving: str, originating: str, stream_id: str) -> str:
    """The XEP-0185 dialback key for one stream.

    Args:
        secret: the authoritative server's dialback secret.
        receiving: the Receiving Server's domain (the Target Domain).
        originating: the Originating Server's domain (the Sender Domain).
        stream_id: the id the Receiving Server gave the stream.

    Returns:
        The key as 64 lowercase hexadecimal digits.
    """
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    hashed = hashlib.sha256(secret).hexdigest().encode("ascii")
    message = f"{receiving} {originating} {stream_id}".encode("utf-8")
    return hmac.new(hashed, message, hashlib.sha256).hexdigest()


def keys_match(expected: str, offered: str) -> bool:
    """Constant-time comparison of a computed and an offered key."""
    return hmac.compare_digest(expected.encode("utf-8"), offered.strip().encode("utf-8"))


def load_or_create_dialback_secret(path: Path) -> bytes:
    """Read the dialback secret at ``path``; create it (mode 0600, random) when missing.

    Keeping it across restarts keeps keys handed out just before a restart verifiable;
    servers that share a domain (a cluster) share the file.
    """
    try:
        data = path.read_bytes().strip()
        if len(data) >= 16:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    data = secrets.token_hex(_SECRET_BYTES).encode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return data


def _attr(value: str) -> str:
    return domish.escapeToXml(value, isattrib=1)


def result(sender: str, target: str, *, key: str | None = None, type: str | None = None,
           condition: str | None = None) -> bytes:
    """A ``<db:result/>``: a key to verify (``key``) or the answer to one (``type``).

    Args:
        sender: the ``from`` domain.
        target: the ``to`` domain.
        key: the dialback key (a request).
        type: ``valid``, ``invalid`` or ``error`` (an answer).
        condition: with ``type='error'``, the stanza error condition.
    """
    return _db("result", sender, target, None, key, type, condition)


def verify(sender: str, target: str, stream_id: str, *, key: str | None = None,
           type: str | None = None, condition: str | None = None) -> bytes:
    """A ``<db:verify/>``: a verification request (``key``) or its answer (``type``)."""
    return _db("verify", sender, target, stream_id, key, type, condition)


def _db(name: str, sender: str, target: str, stream_id: str | None, key: str | None,
        type: str | None, condition: str | None) -> bytes:
    attrs = f" from='{_attr(sender)}' to='{_attr(target)}'"
    if stream_id is not None:
        attrs += f" id='{_attr(stream_id)}'"
    if type is not None:
        attrs += f" type='{_attr(type)}'"
    if condition is not None:
        error_type = "wait" if condition in ("remote-server-timeout", "resource-constraint") else "cancel"
        body = (f"<error type='{error_type}'><{condition} xmlns='{ns.STANZA_ERRORS}'/></error>")
        return f"<db:{name}{attrs}>{body}</db:{name}>".encode("utf-8")
    if key is not None:
        return f"<db:{name}{attrs}>{domish.escapeToXml(key)}</db:{name}>".encode("utf-8")
    return f"<db:{name}{attrs}/>".encode("utf-8")


def error_condition(element: domish.Element) -> str | None:
    """The stanza error condition inside a ``type='error'`` dialback answer, if any."""
    for error in element.elements():
        if error.name != "error":
            continue
        for child in error.elements(ns.STANZA_ERRORS):
            if child.name != "text":
                return child.name
    return None
