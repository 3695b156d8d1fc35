"""SCRAM (RFC 5802, RFC 7677): the key derivation, the client side and the server exchange.

Pure functions derive and check keys (``salted_password``, ``make_credential``,
``client_proof``, ``server_signature``, ``verify_proof``). ``ScramClient`` is the
client side (for tests and the load-test tool); ``ScramServerExchange`` is the
server side, an ``ISaslExchange`` for SCRAM-SHA-1, SCRAM-SHA-256 and their
-PLUS (channel binding, RFC 5929/9266) variants, hardened against:

- downgrade: a ``y`` GS2 flag fails when the server offered a -PLUS mechanism on
  this connection (RFC 5802 section 6);
- account probing: an unknown user gets a deterministic fake salt and fails only
  at proof time, exactly like a wrong password;
- timing: proofs and binding data are compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import stringprep
import unicodedata
from types import MappingProxyType
from typing import Any, Callable, Mapping

from twisted.internet import defer
from twisted.words.protocols.jabber.xmpp_stringprep import nodeprep
from zope.interface import implementer

from tigasepy.interfaces import SaslChallenge, SaslContext, SaslFailure, SaslSuccess, ISaslExchange
from tigasepy.log_level import Logger
from tigasepy.storage.interfaces import ScramCredential
from tigasepy.xmpp.jid import InvalidFormat, parse_jid
from tigasepy.storage.outage import log_failure

#: hash name (as in ``ScramCredential.hash_name``) -> hashlib name.
HASHES: Mapping[str, str] = MappingProxyType({"SHA-1": "sha1", "SHA-256": "sha256"})

#: Length of the random salts ``make_credential`` draws.
SALT_BYTES = 16

#: Longest SCRAM client message accepted.
MAX_MESSAGE_BYTES = 4096

#: Longest JID localpart (RFC 7622 section 3.3), in UTF-8 bytes.
_MAX_LOCALPART_BYTES = 1023

_NONCE_CHARS = re.compile(r"^[\x21-\x2b\x2d-\x7e]+$")     # printable ASCII except ","
_CB_NAME = re.compile(r"^[A-Za-z0-9.-]+$")


class ScramError(Exception):
    """A SCRAM message could not be built or verified (client side)."""


# --- SASLprep (RFC 4013) and names ----------------------------------------------------------

_PROHIBITED = (
    stringprep.in_table_c12, stringprep.in_table_c21, stringprep.in_table_c22, stringprep.in_table_c3,
    stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7,
    stringprep.in_table_c8, stringprep.in_table_c9,
)


def saslprep(text: str, allow_unassigned: bool = True) -> str:
    """Prepare ``text`` with the SASLprep profile of stringprep (RFC 4013).

    Args:
        text: a password or simple user name.
        allow_unassigned: True for a query (checking), False for a stored string
            (setting a password).

    Raises:
        ValueError: ``text`` contains prohibited characters or breaks the bidi rules.
    """
    mapped = []
    for ch in text:
        if stringprep.in_table_c12(ch):
            mapped.append(" ")              # non-ASCII space -> SPACE
        elif not stringprep.in_table_b1(ch):
            mapped.append(ch)               # B.1 "commonly mapped to nothing" dropped
    prepared = unicodedata.normalize("NFKC", "".join(mapped))
    for ch in prepared:
        if any(table(ch) for table in _PROHIBITED):
            raise ValueError("prohibited character")
        if not allow_unassigned and stringprep.in_table_a1(ch):
            raise ValueError("unassigned code point")
    if any(stringprep.in_table_d1(ch) for ch in prepared):
        if any(stringprep.in_table_d2(ch) for ch in prepared):
            raise ValueError("mixed bidirectional text")
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            raise ValueError("bidirectional text must start and end with RandALCat")
    return prepared


def encode_saslname(name: str) -> str:
    """Escape ``,`` and ``=`` in a name for a SCRAM message (RFC 5802 section 5.1)."""
    return name.replace("=", "=3D").replace(",", "=2C")


def decode_saslname(value: str) -> str:
    """Undo ``encode_saslname``.

    Raises:
        ValueError: a ``=`` not followed by ``2C`` or ``3D``.
    """
    out = []
    i = 0
    while i < len(value):
        if value[i] == "=":
            escape = value[i:i + 3]
            if escape == "=2C":
                out.append(",")
            elif escape == "=3D":
                out.append("=")
            else:
                raise ValueError("bad escape in saslname")
            i += 3
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


# --- key derivation ---------------------------------------------------------------------

def _hashlib_name(hash_name: str) -> str:
    try:
        return HASHES[hash_name]
    except KeyError:
        raise ValueError(f"unsupported SCRAM hash {hash_name!r}") from None


def _hmac(hash_name: str, key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, _hashlib_name(hash_name)).digest()


def _h(hash_name: str, data: bytes) -> bytes:
    return hashlib.new(_hashlib_name(hash_name), data).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def digest_size(hash_name: str) -> int:
    """The output size in bytes of ``hash_name``."""
    return hashlib.new(_hashlib_name(hash_name)).digest_size


def salted_password(hash_name: str, password: str | bytes, salt: bytes, iterations: int) -> bytes:
    """SaltedPassword := Hi(Normalize(password), salt, i) (RFC 5802 section 3).

    A ``str`` password is SASLprep'd first (as a query); ``bytes`` are used as given.
    This is the expensive step (PBKDF2): run it off the reactor thread in servers.

    Raises:
        ValueError: the password fails SASLprep, or an unknown hash.
    """
    if isinstance(password, str):
        password = saslprep(password).encode("utf-8")
    return hashlib.pbkdf2_hmac(_hashlib_name(hash_name), password, salt, iterations)


def client_key(hash_name: str, salted: bytes) -> bytes:
    """ClientKey := HMAC(SaltedPassword, "Client Key")."""
    return _hmac(hash_name, salted, b"Client Key")


def stored_key(hash_name: str, salted: bytes) -> bytes:
    """StoredKey := H(ClientKey)."""
    return _h(hash_name, client_key(hash_name, salted))


def server_key(hash_name: str, salted: bytes) -> bytes:
    """ServerKey := HMAC(SaltedPassword, "Server Key")."""
    return _hmac(hash_name, salted, b"Server Key")


def credential_from_salted(hash_name: str, salted: bytes, salt: bytes, iterations: int) -> ScramCredential:
    """The stored credential for an already derived salted password."""
    return ScramCredential(hash_name=hash_name, salt=salt, iterations=iterations,
                           stored_key=stored_key(hash_name, salted),
                           server_key=server_key(hash_name, salted))


def make_credential(hash_name: str, password: str | bytes, iterations: int,
                    salt: bytes | None = None) -> ScramCredential:
    """The credential to store for ``password`` (never the password itself).

    Args:
        hash_name: ``"SHA-1"`` or ``"SHA-256"``.
        password: the password (``str`` is SASLprep'd).
        iterations: the PBKDF2 iteration count.
        salt: the salt; random ``SALT_BYTES`` when omitted.
    """
    if salt is None:
        salt = os.urandom(SALT_BYTES)
    return credential_from_salted(hash_name, salted_password(hash_name, password, salt, iterations),
                                  salt, iterations)


def client_proof(hash_name: str, salted: bytes, auth_message: bytes) -> bytes:
    """ClientProof := ClientKey XOR HMAC(StoredKey, AuthMessage)."""
    key = client_key(hash_name, salted)
    signature = _hmac(hash_name, _h(hash_name, key), auth_message)
    return _xor(key, signature)


def server_signature(hash_name: str, server_key_: bytes, auth_message: bytes) -> bytes:
    """ServerSignature := HMAC(ServerKey, AuthMessage)."""
    return _hmac(hash_name, server_key_, auth_message)


def verify_proof(credential: ScramCredential, auth_message: bytes, proof: bytes) -> bool:
    """True when ``proof`` proves knowledge of the password behind ``credential`` (constant time)."""
    signature = _hmac(credential.hash_name, credential.stored_key, auth_message)
    if len(proof) != len(signature):
        return False
    candidate = _h(credential.hash_name, _xor(proof, signature))
    return hmac.compare_digest(candidate, credential.stored_key)


def random_nonce() -> str:
    """A fresh nonce part: 24 random bytes, base64 (no ``,`` can occur)."""
    return base64.b64encode(os.urandom(24)).decode("ascii")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _mechanism_parts(mechanism: str) -> tuple[str, bool]:
    """``"SCRAM-SHA-256-PLUS"`` -> ``("SHA-256", True)``."""
    plus = mechanism.endswith("-PLUS")
    base = mechanism[:-len("-PLUS")] if plus else mechanism
    if not base.startswith("SCRAM-") or base[len("SCRAM-"):] not in HASHES:
        raise ValueError(f"not a SCRAM mechanism: {mechanism!r}")
    return base[len("SCRAM-"):], plus


def mechanism_name(hash_name: str, plus: bool = False) -> str:
    """The SASL mechanism name for ``hash_name`` (``"SCRAM-SHA-1"``, ``"SCRAM-SHA-1-PLUS"``)."""
    _hashlib_name(hash_name)
    return f"SCRAM-{hash_name}" + ("-PLUS" if plus else "")


def _attributes(message: str) -> list[tuple[str, str]]:
    """Split ``a=1,b=2`` into pairs; raises ValueError when malformed."""
    pairs = []
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=" or not (part[0].isascii() and part[0].isalpha()):
            raise ValueError("malformed attribute")
        pairs.append((part[0], part[2:]))
    return pairs


# --- client side ------------------------------------------------------------------------

class ScramClient:
    """The client side of one SCRAM exchange (RFC 5802 section 5).

    Usage: send ``first()``, pass the server's challenge to ``final(...)`` and send
    the result, then check the ``<success/>`` data with ``verify_server(...)``.
    """

    def __init__(self, mechanism: str, username: str, password: str | bytes, *,
                 authzid: str = "", channel_binding: tuple[str, bytes] | None = None,
                 client_supports_binding: bool = False, nonce: str | None = None) -> None:
        """
        Args:
            mechanism: e.g. ``"SCRAM-SHA-256"`` or ``"SCRAM-SHA-256-PLUS"``.
            username: the simple user name (the JID localpart in XMPP).
            password: the password.
            authzid: the identity to act as (empty: the authenticated one).
            channel_binding: ``(type, data)``, required for a -PLUS mechanism.
            client_supports_binding: send the ``y`` flag with a non-PLUS mechanism
                (the client could bind, but the server did not offer -PLUS).
            nonce: the client nonce (random when omitted; fixed only in tests).
        """
        self.hash_name, self.plus = _mechanism_parts(mechanism)
        if self.plus:
            if channel_binding is None:
                raise ScramError("a -PLUS mechanism needs channel binding data")
            cb_type, self._cb_data = channel_binding
            flag = f"p={cb_type}"
        else:
            self._cb_data = b""
            flag = "y" if client_supports_binding else "n"
        self.gs2_header = f"{flag},{'a=' + encode_saslname(authzid) if authzid else ''},"
        self._password = password
        self._nonce = nonce if nonce is not None else random_nonce()
        self._username = saslprep(username) if isinstance(username, str) else username
        self._first_bare = f"n={encode_saslname(self._username)},r={self._nonce}"
        self._auth_message: bytes | None = None
        self._salted: bytes | None = None

    def first(self) -> bytes:
        """The client-first-message (the SASL initial response)."""
        return (self.gs2_header + self._first_bare).encode("utf-8")

    def final(self, server_first: bytes) -> bytes:
        """The client-final-message answering ``server_first`` (runs PBKDF2).

        Raises:
            ScramError: the server's message is malformed or its nonce does not
                extend ours.
        """
        try:
            text = server_first.decode("utf-8")
            attrs = dict(_attributes(text))
            nonce, salt, iterations = attrs["r"], _unb64(attrs["s"]), int(attrs["i"])
        except (ValueError, KeyError, UnicodeDecodeError, binascii.Error) as e:
            raise ScramError(f"malformed server-first-message: {e}") from None
        if "m" in attrs or not nonce.startswith(self._nonce) or nonce == self._nonce or iterations < 1:
            raise ScramError("server-first-message rejected")
        cbind = _b64(self.gs2_header.encode("utf-8") + self._cb_data)
        without_proof = f"c={cbind},r={nonce}"
        self._auth_message = f"{self._first_bare},{text},{without_proof}".encode("utf-8")
        self._salted = salted_password(self.hash_name, self._password, salt, iterations)
        proof = client_proof(self.hash_name, self._salted, self._auth_message)
        return f"{without_proof},p={_b64(proof)}".encode("ascii")

    def verify_server(self, server_final: bytes) -> None:
        """Check the server-final-message (``v=``), proving the server knew our keys.

        Raises:
            ScramError: an ``e=`` error, a malformed message or a wrong signature.
        """
        if self._auth_message is None or self._salted is None:
            raise ScramError("final() was not called")
        try:
            attrs = dict(_attributes(server_final.decode("utf-8")))
        except (ValueError, UnicodeDecodeError):
            raise ScramError("malformed server-final-message") from None
        if "e" in attrs:
            raise ScramError(f"server error: {attrs['e']}")
        try:
            signature = _unb64(attrs["v"])
        except (KeyError, ValueError, binascii.Error):
            raise ScramError("malformed server-final-message") from None
        expected = server_signature(self.hash_name, server_key(self.hash_name, self._salted),
                                    self._auth_message)
        if not hmac.compare_digest(signature, expected):
            raise ScramError("server signature mismatch")


# --- server side ------------------------------------------------------------------------

CredentialLookup = Callable[[str, str], "defer.Deferred[ScramCredential | None]"]


def fake_salt(secret: bytes, hash_name: str, jid: str) -> bytes:
    """A salt for an account that does not exist, stable per (secret, hash, JID).

    Answering a probe for an unknown user with the same salt every time makes it
    look like a real account; a secret kept across restarts keeps it stable then too.
    """
    return hmac.new(secret, f"scram-fake-salt\0{hash_name}\0{jid}".encode("utf-8"),
                    hashlib.sha256).digest()[:SALT_BYTES]


@implementer(ISaslExchange)
class ScramServerExchange:
    """The server side of one SCRAM exchange (RFC 5802 section 5, RFC 7677), as an ``ISaslExchange``."""

    _log = Logger()

    def __init__(self, mechanism: str, context: SaslContext, lookup: CredentialLookup, *,
                 secret: bytes, plus_offered: bool, fake_iterations: int = 10000,
                 nonce_source: Callable[[], str] = random_nonce) -> None:
        """
        Args:
            mechanism: one of ``SCRAM-SHA-1``, ``SCRAM-SHA-256`` and their ``-PLUS`` forms.
            context: the connection authenticating.
            lookup: ``lookup(bare_jid, hash_name)`` fires with the account's credential or None.
            secret: keys the fake salts of unknown users.
            plus_offered: a -PLUS mechanism was advertised on this connection (a client
                sending the ``y`` flag then signals a downgrade attack).
            fake_iterations: the iteration count announced for unknown users.
            nonce_source: returns the server's nonce part (fixed only in tests).
        """
        self.mechanism = mechanism
        self.hash_name, self.plus = _mechanism_parts(mechanism)
        self._context = context
        self._lookup = lookup
        self._secret = secret
        self._plus_offered = plus_offered
        self._fake_iterations = fake_iterations
        self._nonce_source = nonce_source
        self._state = "start"
        self._username = ""
        self._cb_data = b""
        self._gs2_header = ""
        self._first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._credential: ScramCredential | None = None

    def step(self, response: bytes | None) -> "defer.Deferred[SaslChallenge | SaslSuccess]":
        """See ``ISaslExchange.step``."""
        try:
            if response is not None and len(response) > MAX_MESSAGE_BYTES:
                raise SaslFailure("malformed-request", "message too long")
            if self._state == "start":
                if response is None:
                    self._state = "await-first"
                    return defer.succeed(SaslChallenge(b""))
                return self._client_first(response)
            if self._state == "await-first" and response is not None:
                return self._client_first(response)
            if self._state == "await-final" and response is not None:
                return defer.succeed(self._client_final(response))
            raise SaslFailure("malformed-request", "unexpected SASL response")
        except SaslFailure as failure:
            self._state = "failed"
            self._log.info("SASL {mechanism} failed for {user!r} on {domain} from {peer}: {condition}",
                           mechanism=self.mechanism, user=self._username, domain=self._context.domain,
                           peer=self._context.peer, condition=failure.condition)
            return defer.fail(failure)

    def _client_first(self, response: bytes) -> "defer.Deferred[SaslChallenge]":
        self._state = "looking-up"
        try:
            text = response.decode("utf-8")
            flag, authzid_attr, first_bare = text.split(",", 2)
        except (UnicodeDecodeError, ValueError):
            raise SaslFailure("malformed-request", "malformed client-first-message") from None
        self._check_binding_flag(flag)
        authzid = ""
        if authzid_attr:
            if not authzid_attr.startswith("a="):
                raise SaslFailure("malformed-request", "malformed authzid")
            authzid = self._decode(authzid_attr[2:])
        try:
            attrs = _attributes(first_bare)
        except ValueError:
            raise SaslFailure("malformed-request", "malformed client-first-message") from None
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r":
            raise SaslFailure("malformed-request", "client-first-message needs n= then r=")
        if any(key == "m" for key, _ in attrs):
            raise SaslFailure("malformed-request", "mandatory extensions are not supported")
        client_nonce = attrs[1][1]
        if not _NONCE_CHARS.match(client_nonce):
            raise SaslFailure("malformed-request", "bad nonce")
        self._username = self._decode(attrs[0][1])
        try:
            username = nodeprep.prepare(self._username)
        except UnicodeError:
            raise SaslFailure("not-authorized") from None
        if not username or len(username.encode("utf-8")) > _MAX_LOCALPART_BYTES:
            raise SaslFailure("not-authorized")
        self._username = username
        jid = f"{username}@{self._context.domain}"
        check_authzid(authzid, jid)
        self._gs2_header = f"{flag},{authzid_attr},"
        self._first_bare = first_bare
        self._nonce = client_nonce + self._nonce_source()
        d = defer.maybeDeferred(self._lookup, jid, self.hash_name)
        d.addCallback(self._server_first_message, jid)
        d.addErrback(self._lookup_failed)
        return d

    def _lookup_failed(self, failure: Any) -> Any:
        self._state = "failed"
        if failure.check(SaslFailure):
            return failure
        log_failure(self._log, failure, "SCRAM credential lookup failed")
        raise SaslFailure("temporary-auth-failure")

    def _check_binding_flag(self, flag: str) -> None:
        binding = self._context.channel_binding
        if flag.startswith("p="):
            cb_type = flag[2:]
            if not _CB_NAME.match(cb_type):
                raise SaslFailure("malformed-request", "bad channel binding name")
            if not self.plus or binding is None or cb_type not in binding.types:
                raise SaslFailure("not-authorized", "channel binding not available")
            self._cb_data = binding.data[cb_type]
        elif flag == "y":
            if self.plus or self._plus_offered:
                raise SaslFailure("not-authorized", "channel binding downgrade")
        elif flag == "n":
            if self.plus:
                raise SaslFailure("not-authorized", "a -PLUS mechanism needs channel binding")
        else:
            raise SaslFailure("malformed-request", "bad GS2 channel binding flag")

    @staticmethod
    def _decode(value: str) -> str:
        try:
            return decode_saslname(value)
        except ValueError:
            raise SaslFailure("malformed-request", "bad escape") from None

    def _server_first_message(self, credential: ScramCredential | None, jid: str) -> SaslChallenge:
        if credential is None or credential.hash_name != self.hash_name:
            credential = None
            salt, iterations = fake_salt(self._secret, self.hash_name, jid), self._fake_iterations
        else:
            salt, iterations = credential.salt, credential.iterations
        self._credential = credential
        self._server_first = f"r={self._nonce},s={_b64(salt)},i={iterations}"
        self._state = "await-final"
        return SaslChallenge(self._server_first.encode("ascii"))

    def _client_final(self, response: bytes) -> SaslSuccess:
        try:
            text = response.decode("utf-8")
            without_proof, proof_b64 = text.rsplit(",p=", 1)
            attrs = _attributes(without_proof)
            proof = _unb64(proof_b64)
        except (UnicodeDecodeError, ValueError, binascii.Error):
            raise SaslFailure("malformed-request", "malformed client-final-message") from None
        if len(attrs) < 2 or attrs[0][0] != "c" or attrs[1][0] != "r":
            raise SaslFailure("malformed-request", "client-final-message needs c= then r=")
        if any(key in ("m", "p") for key, _ in attrs):
            raise SaslFailure("malformed-request", "unexpected attribute")
        try:
            cbind = _unb64(attrs[0][1])
        except (ValueError, binascii.Error):
            raise SaslFailure("malformed-request", "malformed channel binding") from None
        expected_cbind = self._gs2_header.encode("utf-8") + self._cb_data
        if not hmac.compare_digest(cbind, expected_cbind):
            raise SaslFailure("not-authorized", "channel binding mismatch")
        if not hmac.compare_digest(attrs[1][1].encode("utf-8"), self._nonce.encode("utf-8")):
            raise SaslFailure("not-authorized", "nonce mismatch")
        auth_message = f"{self._first_bare},{self._server_first},{without_proof}".encode("utf-8")
        credential = self._credential
        if credential is None:
            # Unknown user: do the same work, then fail like a wrong password.
            dummy = ScramCredential(self.hash_name, b"", 0, b"\0" * digest_size(self.hash_name), b"")
            verify_proof(dummy, auth_message, proof)
            raise SaslFailure("not-authorized")
        if not verify_proof(credential, auth_message, proof):
            raise SaslFailure("not-authorized")
        self._state = "done"
        signature = server_signature(self.hash_name, credential.server_key, auth_message)
        self._log.debug("SASL {mechanism} succeeded for {user} on {domain}",
                        mechanism=self.mechanism, user=self._username, domain=self._context.domain)
        return SaslSuccess(username=self._username, data=b"v=" + _b64(signature).encode("ascii"))


def check_authzid(authzid: str, jid: str) -> None:
    """Allow only an empty authorization identity or the authenticating account's bare JID.

    Raises:
        SaslFailure: ``invalid-authzid`` for anything else.
    """
    if not authzid:
        return
    try:
        parsed = parse_jid(authzid)
    except InvalidFormat:
        raise SaslFailure("invalid-authzid") from None
    if parsed is None or parsed.resource is not None or parsed.userhost() != jid:
        raise SaslFailure("invalid-authzid")
