"""Client-side SASL for the load generator: SCRAM (RFC 5802, RFC 7677) and PLAIN (RFC 4616).

The SCRAM arithmetic comes from ``tigasepy.auth.scram`` (its public key-derivation
functions, the same ones ``ScramClient`` uses). What this module adds is a bounded
cache of salted passwords keyed by (hash, password, salt, iterations): PBKDF2 costs
milliseconds per login, and without the cache a login storm measures the client's
PBKDF2 instead of the server. Servers that store a fixed salt per account (all the
usual ones) hit the cache from an account's second login on.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hmac

from tigasepy.auth.scram import (
    client_proof, encode_saslname, random_nonce, salted_password, server_key, server_signature,
)

#: Mechanisms this client can run, most preferred first.
PREFERENCE = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")


class SaslError(Exception):
    """The server's SASL data was malformed or did not prove the server knew our keys."""


class SaltedPasswordCache:
    """A bounded LRU of PBKDF2 results; counts hits and derivations for the report."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[tuple[str, str, bytes, int], bytes] = collections.OrderedDict()
        self.hits = 0
        self.derivations = 0

    def get(self, hash_name: str, password: str, salt: bytes, iterations: int) -> bytes:
        """The salted password, derived once per (hash, password, salt, iterations)."""
        key = (hash_name, password, salt, iterations)
        salted = self._entries.get(key)
        if salted is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return salted
        salted = salted_password(hash_name, password, salt, iterations)
        self.derivations += 1
        self._entries[key] = salted
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return salted

    def __len__(self) -> int:
        return len(self._entries)


def choose_mechanism(offered: list[str], wanted: str | None, allow_plain: bool) -> str | None:
    """The mechanism to use: ``wanted`` if offered, else the best of ``PREFERENCE`` offered."""
    if wanted:
        return wanted if wanted in offered else None
    for name in PREFERENCE:
        if name in offered and (name != "PLAIN" or allow_plain):
            return name
    return None


def plain_initial(username: str, password: str) -> bytes:
    """The PLAIN initial response: no authzid, authcid, password (RFC 4616 section 2)."""
    return f"\0{username}\0{password}".encode("utf-8")


class ScramExchange:
    """One client SCRAM exchange without channel binding (gs2 flag ``n``)."""

    def __init__(self, mechanism: str, username: str, password: str, cache: SaltedPasswordCache,
                 nonce: str | None = None) -> None:
        if not mechanism.startswith("SCRAM-") or mechanism.endswith("-PLUS"):
            raise ValueError(f"unsupported mechanism {mechanism}")
        self.hash_name = mechanism[len("SCRAM-"):]
        self._password = password
        self._cache = cache
        self._nonce = nonce or random_nonce()
        self._first_bare = f"n={encode_saslname(username)},r={self._nonce}"
        self._auth_message = b""
        self._salted = b""

    def first(self) -> bytes:
        """The client-first-message."""
        return ("n,," + self._first_bare).encode("utf-8")

    def final(self, server_first: bytes) -> bytes:
        """The client-final-message for the server's challenge."""
        try:
            text = server_first.decode("utf-8")
            attrs = dict(part.split("=", 1) for part in text.split(","))
            nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        except (ValueError, KeyError, UnicodeDecodeError, binascii.Error) as e:
            raise SaslError(f"malformed server-first-message: {e}") from None
        if not nonce.startswith(self._nonce) or iterations < 1:
            raise SaslError("server-first-message rejected")
        without_proof = f"c=biws,r={nonce}"
        self._auth_message = f"{self._first_bare},{text},{without_proof}".encode("utf-8")
        self._salted = self._cache.get(self.hash_name, self._password, salt, iterations)
        proof = client_proof(self.hash_name, self._salted, self._auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode('ascii')}".encode("ascii")

    def verify(self, server_final: bytes) -> None:
        """Check ``v=`` in the server-final-message; raises ``SaslError`` when wrong."""
        text = server_final.decode("utf-8", "replace")
        if not text.startswith("v="):
            raise SaslError(f"server-final-message without a signature: {text[:40]!r}")
        try:
            signature = base64.b64decode(text[2:].split(",")[0])
        except (ValueError, binascii.Error):
            raise SaslError("malformed server signature") from None
        expected = server_signature(self.hash_name, server_key(self.hash_name, self._salted),
                                    self._auth_message)
        if not hmac.compare_digest(signature, expected):
            raise SaslError("server signature mismatch")
