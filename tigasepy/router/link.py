"""The link between a session-manager process and its connection-manager processes.

ARCHITECTURE.md section 5, the split deployment: connection managers (c2s) run in a DMZ
process, the session manager (SM) with storage and authentication in the private
network. The SM process dials *out* to every connection manager over TLS; this module is
what both ends share: the framing, the mutual authentication, reliable delivery across
reconnections, and keepalives. ``link_cm.py`` (the connection manager's end) and
``link_sm.py`` (the session manager's end) put session semantics on top.

Wire format (version 1)
-----------------------
Every frame is a 32-bit big-endian length, then a UTF-8 JSON object (the header), then,
for frames that carry a stanza, ``\\n`` and the stanza serialized as in a ``jabber:client``
stream. The header's ``t`` names the frame type.

Authentication, both ways, over the TLS channel (the secret never crosses the wire):

1. SM -> CM ``{"t": "hello", "v": 1, "role": "sm", "nonce", "session", "h"}``
2. CM -> SM ``{"t": "hello", "v": 1, "role": "cm", "nonce"}``
3. SM -> CM ``{"t": "auth", "proof": HMAC(secret, "sm", nonces, binding)}``
4. CM -> SM ``{"t": "ready", "proof": HMAC(secret, "cm", ...), "session", "resumed", "h"}``

``binding`` is the TLS channel binding (RFC 9266 ``tls-exporter``; TLS 1.3 is required
on the link), so a proof made for one TLS connection is worthless on another: a man in
the middle who terminates TLS towards both ends cannot relay it. The SM proves first,
so a client that reaches the connection manager's link port learns nothing that helps
guess the secret. Optionally each end also pins the SHA-256 fingerprint of the other's
certificate (``[link] peer_fingerprints``).

Reliable delivery: every frame other than the control frames (``hello``, ``auth``,
``ready``, ``ack``, ``error``) is numbered implicitly from the start of a *link session*
and kept by the sender until the peer acknowledges it (``{"t": "ack", "h": N}``, N
frames received so far; also sent as a keepalive). A link session outlives TCP
connections: on reconnection the SM asks to resume it with the number of frames it
received (``hello`` ``session``/``h``), the connection manager answers with its own
count (``ready``), and each side resends what the other has not seen. A link session
that cannot be resumed (a process restarted, or the grace period ran out) starts anew;
each end then salvages what it can (``LinkSession.session_lost``).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any, Callable, Iterable

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IReactorTime
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from twisted.words.xish import domish

from tigasepy.c2s.csi import holdable
from tigasepy.config import ConfigError, LinkConfig
from tigasepy.log_level import Logger
from tigasepy.stream.parser import StreamParseError, StreamParser
from tigasepy.stream.tcp import disable_nagle
from tigasepy.xmpp.serialize import to_xml

__all__ = [
    "CONTROL_FRAMES",
    "LINK_PROTOCOL_VERSION",
    "LinkProtocol",
    "LinkSession",
    "LinkSettings",
    "Outbox",
    "b64",
    "certificate_fingerprint",
    "decode_frame",
    "encode_frame",
    "link_tls_options",
    "load_link_secret",
    "needs_settling",
    "make_proof",
    "tls_binding",
    "unb64",
]

LINK_PROTOCOL_VERSION = 1
"""The version in ``hello``; a peer speaking another one is refused."""

CONTROL_FRAMES = frozenset({"hello", "auth", "ready", "ack", "error"})
"""Frame types that are not numbered (not part of reliable delivery)."""

_PRE_AUTH_MAX_FRAME = 8192
_NONCE_BYTES = 32
_PROOF_LABEL = b"tigasepy link v1"
_ACK_DELAY_S = 0.01
_ACK_EVERY = 128
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode   # one encoder, not one per frame
_DECODE = json.JSONDecoder().decode
_STREAM_HEADER = (b"<stream:stream xmlns='jabber:client' "
                  b"xmlns:stream='http://etherx.jabber.org/streams'>")


# -- small helpers ---------------------------------------------------------------------------

def b64(data: bytes) -> str:
    """Bytes as base64 text (for JSON headers)."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any) -> bytes:
    """The bytes of a base64 header value.

    Raises:
        ValueError: not a base64 string.
    """
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    return base64.b64decode(text, validate=True)


def encode_frame(header: dict[str, Any], payload: domish.Element | str | None = None) -> bytes:
    """One frame body: the JSON header, then ``\\n`` and the serialized stanza if any."""
    data = _ENCODE(header).encode("utf-8")
    if payload is None:
        return data
    xml = payload if isinstance(payload, str) else to_xml(payload)
    return data + b"\n" + xml.encode("utf-8")


def decode_frame(frame: bytes) -> tuple[dict[str, Any], bytes | None]:
    """Split a frame body into its header and the stanza bytes (None when it carries none).

    Raises:
        ValueError: the header is not a JSON object with a string ``t``.
    """
    head, sep, payload = frame.partition(b"\n")
    header = _DECODE(head.decode("utf-8"))
    if not isinstance(header, dict) or not isinstance(header.get("t"), str):
        raise ValueError("a frame header is a JSON object with a type")
    return header, (payload if sep else None)


def make_proof(secret: bytes, role: str, nonce_sm: bytes, nonce_cm: bytes, binding: bytes) -> bytes:
    """What ``role`` (``"sm"`` or ``"cm"``) sends to prove it holds ``secret`` on this channel."""
    message = b"\0".join((_PROOF_LABEL, role.encode("ascii"), nonce_sm, nonce_cm, binding))
    return hmac.new(secret, message, hashlib.sha256).digest()


def tls_binding(transport: Any, server: bool) -> bytes | None:
    """The link's channel binding: RFC 9266 ``tls-exporter`` of a finished TLS 1.3 handshake.

    None when the transport is not TLS 1.3 (the link refuses to authenticate then).
    """
    from tigasepy.tls import channel_binding

    binding = channel_binding(transport, server=server)
    if binding is None:
        return None
    return binding.data.get("tls-exporter")


def certificate_fingerprint(transport: Any) -> str | None:
    """The SHA-256 of the peer's certificate (DER) as lowercase hex, or None without one."""
    try:
        connection = transport.getHandle()
        certificate = connection.get_peer_certificate(as_cryptography=True)
    except Exception:  # noqa: BLE001 - not a TLS transport
        return None
    if certificate is None:
        return None
    from cryptography.hazmat.primitives import serialization

    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def normalize_fingerprint(pin: str) -> str:
    """A configured fingerprint (``AB:CD:...`` or plain hex) as lowercase hex."""
    return pin.replace(":", "").lower()


def load_link_secret(path: Path, create: bool) -> bytes:
    """The link's shared secret: the first line of ``path``.

    Args:
        path: the secret file.
        create: write a new random secret (mode 0600) when the file does not exist (the
            session manager does; the connection managers must be given a copy).

    Raises:
        ConfigError: the file is missing (and not to be created), unreadable, readable by
            others, or too short.
    """
    where = ("link", "secret_file")
    if not path.exists():
        if not create:
            raise ConfigError(f"no link secret at {path}: copy the session manager's secret file here",
                              where)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        Logger().warn("Generated a link secret in {path}; copy it to every connection-manager process "
                      "([link] secret_file)", path=str(path))
    try:
        mode = path.stat().st_mode
        with open(path, encoding="utf-8") as f:
            line = f.readline().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}", where) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path} is readable by other users; chmod 600 it", where)
    if len(line) < 16:
        raise ConfigError(f"{path}: the secret must be at least 16 characters "
                          "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')", where)
    return line.encode("utf-8")


class _LinkTLSOptions:
    """Builds the link's TLS contexts: TLS 1.3 only, our certificate on both ends.

    No CA check happens: the HMAC proofs over the channel binding authenticate the
    ends, and ``peer_fingerprints`` can pin the certificates. The listening end asks
    for the dialer's certificate (without requiring one) so it can be pinned.
    """

    @staticmethod
    def build(cert_path: Path, key_path: Path, server: bool) -> Any:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from OpenSSL import SSL
        from twisted.internet.ssl import CertificateOptions, TLSVersion

        try:
            chain = x509.load_pem_x509_certificates(Path(cert_path).read_bytes())
            key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as e:
            raise ConfigError(f"cannot load the link certificate {cert_path}: {e}", ("tls", "certificate")) from None

        class Options(CertificateOptions):
            _asks_for_peer_certificate = False

            def getContext(self) -> Any:
                context = super().getContext()
                if server and not self._asks_for_peer_certificate:
                    context.set_verify(SSL.VERIFY_PEER, lambda *_args: True)
                    self._asks_for_peer_certificate = True
                return context

        return Options(privateKey=key, certificate=chain[0], extraCertChain=chain[1:],
                       raiseMinimumTo=TLSVersion.TLSv1_3, verify=False)


def link_tls_options(cert_path: Path, key_path: Path, server: bool) -> Any:
    """The TLS context factory of the link (``server``: the connection manager's listener)."""
    return _LinkTLSOptions.build(cert_path, key_path, server)


# -- reliable delivery -------------------------------------------------------------------------

class Outbox:
    """Frames sent in this link session that the peer has not acknowledged yet, oldest first.

    ``base`` frames were acknowledged; the next frame added is number ``total``.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.base = 0
        self.frames: collections.deque[bytes] = collections.deque()
        self._barriers: collections.deque[tuple[int, defer.Deferred]] = collections.deque()

    @property
    def total(self) -> int:
        """How many frames were added in this link session."""
        return self.base + len(self.frames)

    @property
    def full(self) -> bool:
        """True when ``limit`` frames wait for acknowledgement (new work should be refused)."""
        return len(self.frames) >= self.limit

    def add(self, frame: bytes) -> None:
        """Keep ``frame`` until it is acknowledged."""
        self.frames.append(frame)

    def ack(self, h: int) -> bool:
        """The peer received the first ``h`` frames; False when ``h`` is impossible."""
        if not self.base <= h <= self.total:
            return False
        for _ in range(h - self.base):
            self.frames.popleft()
        self.base = h
        barriers = self._barriers
        while barriers and barriers[0][0] <= h:
            barriers.popleft()[1].callback(None)
        return True

    def barrier(self) -> defer.Deferred:
        """Fires once every frame added so far is acknowledged (never, if the session is lost)."""
        if not self.frames:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._barriers.append((self.total, d))
        return d

    def clear(self) -> list[bytes]:
        """Forget every frame (the link session is over); returns the unacknowledged ones."""
        frames = list(self.frames)
        self.frames.clear()
        self.base = 0
        self._barriers.clear()   # their waiters are closed by the session's end
        return frames


class LinkSettings:
    """What a ``LinkProtocol`` needs besides its session: secret, limits, channel binding.

    Args:
        config: the ``[link]`` section.
        secret: the shared secret.
        binding: ``binding(transport, server)`` returning the channel-binding bytes;
            ``tls_binding`` for real connections, a stub in tests.
        fingerprint: ``fingerprint(transport)`` of the peer's certificate.
    """

    def __init__(self, config: LinkConfig, secret: bytes,
                 binding: Callable[[Any, bool], bytes | None] = tls_binding,
                 fingerprint: Callable[[Any], str | None] = certificate_fingerprint) -> None:
        self.secret = secret
        self.binding = binding
        self.fingerprint = fingerprint
        self.config = config

    @property
    def config(self) -> LinkConfig:
        """The ``[link]`` section in force (replaced on reload)."""
        return self._config

    @config.setter
    def config(self, config: LinkConfig) -> None:
        self._config = config
        self.pins = frozenset(normalize_fingerprint(p) for p in config.peer_fingerprints)


class LinkSession:
    """One end's state of a link session: numbering, acknowledgements, resumption, grace.

    Subclasses (the two ends) implement ``handle_frame`` for the numbered frames they
    receive, ``session_started``/``session_lost`` for the start and the end of a link
    session, and ``link_down_too_long`` for a link that stayed down past the grace period.

    Args:
        config: the ``[link]`` section (``grace_period_s``, ``max_queued``).
        clock: time and timers.
        name: how logs name the other end.
    """

    _log = Logger()

    def __init__(self, config: LinkConfig, clock: IReactorTime, name: str) -> None:
        self.config = config
        self.clock = clock
        self.name = name
        self.session_id: str | None = None
        self.outbox = Outbox(config.max_queued)
        self.received = 0
        self.protocol: LinkProtocol | None = None
        self._ack_timer: Any = None
        self._acked_in = 0
        self._grace_timer: Any = None

    # -- state ---------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True while an authenticated connection carries this session."""
        return self.protocol is not None

    def reconfigure(self, config: LinkConfig) -> None:
        """New ``[link]`` settings (limits apply from now on)."""
        self.config = config
        self.outbox.limit = config.max_queued

    # -- sending -------------------------------------------------------------------------
    def send_frame(self, header: dict[str, Any], payload: domish.Element | str | None = None) -> None:
        """Send a numbered frame now, or when the link is back (it is kept until acknowledged)."""
        frame = encode_frame(header, payload)
        self.outbox.add(frame)
        if self.protocol is not None:
            self.protocol.sendString(frame)

    def send_control(self, header: dict[str, Any]) -> None:
        """Send an unnumbered control frame if connected (lost otherwise)."""
        if self.protocol is not None:
            self.protocol.sendString(encode_frame(header))

    # -- receiving (called by LinkProtocol) ----------------------------------------------
    def frame_received(self, header: dict[str, Any], stanza: domish.Element | None) -> None:
        """A numbered frame arrived: count it, acknowledge it soon, handle it."""
        self.received += 1
        if self.received - self._acked_in >= _ACK_EVERY:
            self.send_ack()
        elif self._ack_timer is None:
            self._ack_timer = self.clock.callLater(_ACK_DELAY_S, self._ack_due)
        try:
            self.handle_frame(header, stanza)
        except Exception:
            self._log.failure("link {name}: error handling a {type} frame", name=self.name, type=header.get("t"))

    def ack_received(self, h: int) -> bool:
        """The peer acknowledged ``h`` frames; False when that is more than were sent."""
        return self.outbox.ack(h)

    def _ack_due(self) -> None:
        self._ack_timer = None
        self.send_ack()

    def send_ack(self) -> None:
        """Tell the peer how many numbered frames arrived (also the keepalive)."""
        if self._ack_timer is not None and self._ack_timer.active():
            self._ack_timer.cancel()
        self._ack_timer = None
        self._acked_in = self.received
        self.send_control({"t": "ack", "h": self.received})

    # -- connections ---------------------------------------------------------------------
    def attach(self, proto: "LinkProtocol", session_id: str, resumed: bool, peer_h: int) -> bool:
        """An authenticated connection now carries the session ``session_id``.

        With ``resumed``, frames the peer has seen (``peer_h``) are dropped and the rest
        resent; otherwise the previous link session (if any) is lost and a new one starts.
        Returns False when ``peer_h`` is impossible (the connection is dropped).
        """
        if self.protocol is not None and self.protocol is not proto:
            old, self.protocol = self.protocol, None
            old.replaced()
        self._cancel_grace()
        if resumed and session_id == self.session_id:
            if not self.outbox.ack(peer_h):
                self._log.error("link {name}: the peer acknowledged {h} frames but only {total} were sent",
                                name=self.name, h=peer_h, total=self.outbox.total)
                return False
            self.protocol = proto
            for frame in list(self.outbox.frames):
                proto.sendString(frame)
            self._log.info("link {name}: session resumed ({count} frames resent)", name=self.name,
                           count=len(self.outbox.frames))
            self.send_ack()
            return True
        if self.session_id is not None:
            self._lose_session("the link session could not be resumed")
        self.session_id = session_id
        self.received = 0
        self._acked_in = 0
        salvaged = self.outbox.clear()
        self.protocol = proto
        self._log.info("link {name}: new link session", name=self.name)
        self.session_started(salvaged)
        return True

    def detach(self, proto: "LinkProtocol", reason: str) -> None:
        """The connection carrying the session ended; the grace period starts."""
        if self.protocol is not proto:
            return
        self.protocol = None
        if self._ack_timer is not None and self._ack_timer.active():
            self._ack_timer.cancel()
        self._ack_timer = None
        if self.session_id is None:
            return
        self._log.warn("link {name} lost ({reason}); keeping the session {grace}s", name=self.name,
                       reason=reason, grace=self.config.grace_period_s)
        self._cancel_grace()
        self._grace_timer = self.clock.callLater(self.config.grace_period_s, self._grace_over)

    def _grace_over(self) -> None:
        self._grace_timer = None
        if self.protocol is not None or self.session_id is None:
            return
        self._log.warn("link {name} still down after {grace}s", name=self.name,
                       grace=self.config.grace_period_s)
        self._lose_session("the link stayed down past the grace period")
        self.link_down_too_long()

    def _cancel_grace(self) -> None:
        if self._grace_timer is not None and self._grace_timer.active():
            self._grace_timer.cancel()
        self._grace_timer = None

    def _lose_session(self, reason: str) -> None:
        self.session_id = None
        self.received = 0
        self._acked_in = 0
        unacked = self.outbox.clear()
        self._log.warn("link {name}: link session lost ({reason}); {count} frames unacknowledged",
                       name=self.name, reason=reason, count=len(unacked))
        self.session_lost(unacked)

    def abandon(self, reason: str) -> None:
        """End the link session now (shutdown, or a peer that must not be waited for)."""
        self._cancel_grace()
        proto, self.protocol = self.protocol, None
        if proto is not None:
            proto.replaced()
        if self.session_id is not None:
            self._lose_session(reason)

    # -- for subclasses ------------------------------------------------------------------
    def handle_frame(self, header: dict[str, Any], stanza: domish.Element | None) -> None:
        """A numbered frame from the peer."""
        raise NotImplementedError

    def session_started(self, salvaged: list[bytes]) -> None:
        """A new link session began; ``salvaged`` are the frames this end had queued before
        (for a session that was never acknowledged), which it may send again."""

    def session_lost(self, unacked: list[bytes]) -> None:
        """The link session ended for good; ``unacked`` were never acknowledged by the peer."""

    def link_down_too_long(self) -> None:
        """The link stayed down past the grace period (after ``session_lost``)."""


# -- the connection ---------------------------------------------------------------------------

class _Phase:
    HELLO = "hello"      # waiting for the peer's hello
    AUTH = "auth"        # CM: waiting for the SM's proof; SM: waiting for ready
    READY = "ready"
    CLOSED = "closed"


class LinkProtocol(Int32StringReceiver):
    """One TLS connection of the link: handshake, then frames for a ``LinkSession``.

    Args:
        initiator: True on the session manager's side (it connects and proves first).
        settings: secret, limits, channel binding.
        clock: time and timers.
        sessions: on the initiator, the ``LinkSession`` to resume or start; on the
            connection manager, an object with ``accept(session_id, h)`` returning
            ``(LinkSession, session_id, resumed, own_h)``.
    """

    _log = Logger()

    def __init__(self, initiator: bool, settings: LinkSettings, clock: IReactorTime, sessions: Any,
                 name: str = "") -> None:
        self.initiator = initiator
        self.settings = settings
        self.clock = clock
        self.sessions = sessions
        self.name = name
        self.session: LinkSession | None = None
        self.phase = _Phase.HELLO
        self.MAX_LENGTH = _PRE_AUTH_MAX_FRAME
        self._nonce = secrets.token_bytes(_NONCE_BYTES)
        self._peer_nonce = b""
        self._peer_h = 0
        self._handshake_timer: Any = None
        self._keepalive_timer: Any = None
        self._last_received = 0.0
        self._parsed: list[domish.Element] = []
        self._parser: StreamParser | None = None
        self._peer_session: str | None = None
        self.close_reason = ""
        #: Called once when the connection ends, whatever the phase (the dialer reconnects).
        self.on_lost: Callable[[], None] | None = None

    # -- connection life cycle -----------------------------------------------------------
    def connectionMade(self) -> None:
        disable_nagle(self.transport)
        self._last_received = self.clock.seconds()
        self._handshake_timer = self.clock.callLater(self.settings.config.handshake_timeout_s,
                                                     self._handshake_expired)
        if self.initiator:
            session = self.sessions
            self._send({"t": "hello", "v": LINK_PROTOCOL_VERSION, "role": "sm", "nonce": b64(self._nonce),
                        "session": session.session_id, "h": session.received})

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.phase = _Phase.CLOSED
        for timer in (self._handshake_timer, self._keepalive_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._handshake_timer = self._keepalive_timer = None
        if self.session is not None:
            self.session.detach(self, self.close_reason or reason.getErrorMessage())
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()

    def replaced(self) -> None:
        """Another connection took over the session: drop this one quietly."""
        self.session = None
        self.close_reason = "replaced"
        if self.transport is not None:
            self.transport.loseConnection()

    def fail(self, reason: str, tell_peer: str | None = None) -> None:
        """End the connection (a protocol or authentication error)."""
        if self.phase == _Phase.CLOSED:
            return
        self.close_reason = reason
        if tell_peer is not None:
            self._send({"t": "error", "reason": tell_peer})
        self.phase = _Phase.CLOSED
        self.transport.loseConnection()

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if self.phase != _Phase.READY:
            self._log.warn("link {name}: handshake not finished in time", name=self._who())
            self.fail("handshake timeout")
            self.transport.abortConnection()

    def _who(self) -> str:
        if self.name:
            return self.name
        try:
            peer = self.transport.getPeer()
            return f"{peer.host}:{peer.port}"
        except Exception:  # noqa: BLE001
            return "?"

    def lengthLimitExceeded(self, length: int) -> None:
        self._log.warn("link {name}: a frame of {length} bytes is over the limit", name=self._who(),
                       length=length)
        self.fail("frame too large")

    def _send(self, header: dict[str, Any]) -> None:
        self.sendString(encode_frame(header))

    # -- frames --------------------------------------------------------------------------
    def stringReceived(self, frame: bytes) -> None:
        if self.phase == _Phase.CLOSED:
            return
        self._last_received = self.clock.seconds()
        try:
            header, payload = decode_frame(frame)
        except (ValueError, UnicodeDecodeError):
            self._log.warn("link {name}: malformed frame", name=self._who())
            self.fail("malformed frame", "bad-format")
            return
        kind = header["t"]
        if kind == "error":
            self._log.error("link {name}: the peer ended the link: {reason}", name=self._who(),
                            reason=str(header.get("reason"))[:100])
            self.fail(f"refused by the peer ({str(header.get('reason'))[:100]})")
            return
        try:
            if self.phase == _Phase.READY:
                self._ready_frame(kind, header, payload)
            elif self.phase == _Phase.HELLO:
                self._hello(kind, header)
            elif self.phase == _Phase.AUTH:
                if self.initiator:
                    self._ready(kind, header)
                else:
                    self._auth(kind, header)
        except (ValueError, KeyError, TypeError) as e:
            self._log.warn("link {name}: protocol error: {error}", name=self._who(), error=str(e)[:200])
            self.fail("protocol error", "bad-format")

    def _ready_frame(self, kind: str, header: dict[str, Any], payload: bytes | None) -> None:
        session = self.session
        if session is None:
            return
        if kind == "ack":
            h = header["h"]
            if not isinstance(h, int) or not session.ack_received(h):
                raise ValueError(f"impossible ack {h!r}")
            return
        if kind in CONTROL_FRAMES:
            raise ValueError(f"unexpected {kind}")
        stanza = self._parse(payload) if payload is not None else None
        session.frame_received(header, stanza)

    def _parse(self, payload: bytes) -> domish.Element:
        parser = self._parser
        if parser is None:
            parser = self._parser = StreamParser(lambda header: None, self._parsed.append, lambda: None,
                                                 max_stanza_bytes=self.settings.config.max_frame_bytes)
            parser.content_namespace = "jabber:client"
            parser.feed(_STREAM_HEADER)
        try:
            parser.feed(payload)
        except StreamParseError as e:
            raise ValueError(f"bad stanza: {e.condition}") from None
        parsed, self._parsed[:] = list(self._parsed), []
        if len(parsed) != 1:
            raise ValueError("a frame carries exactly one stanza")
        return parsed[0]

    # -- handshake -----------------------------------------------------------------------
    def _hello(self, kind: str, header: dict[str, Any]) -> None:
        if kind != "hello":
            raise ValueError(f"expected hello, got {kind}")
        if header.get("v") != LINK_PROTOCOL_VERSION:
            self._log.error("link {name}: the peer speaks link protocol {v}, not {ours}", name=self._who(),
                            v=header.get("v"), ours=LINK_PROTOCOL_VERSION)
            self.fail("version mismatch", "unsupported-version")
            return
        expected = "cm" if self.initiator else "sm"
        if header.get("role") != expected:
            raise ValueError(f"the peer is not a {expected}")
        self._peer_nonce = unb64(header["nonce"])
        if len(self._peer_nonce) != _NONCE_BYTES:
            raise ValueError("bad nonce")
        self.phase = _Phase.AUTH
        if self.initiator:
            binding = self._binding()
            if binding is None:
                return
            proof = make_proof(self.settings.secret, "sm", self._nonce, self._peer_nonce, binding)
            self._send({"t": "auth", "proof": b64(proof)})
        else:
            session_id = header.get("session")
            h = header.get("h", 0)
            if session_id is not None and not isinstance(session_id, str):
                raise ValueError("bad session id")
            if not isinstance(h, int) or h < 0:
                raise ValueError("bad h")
            self._peer_session = session_id
            self._peer_h = h
            self._send({"t": "hello", "v": LINK_PROTOCOL_VERSION, "role": "cm", "nonce": b64(self._nonce)})

    def _binding(self) -> bytes | None:
        """The channel binding and, when configured, the pinned peer certificate."""
        pins = self.settings.pins
        if pins:
            fingerprint = self.settings.fingerprint(self.transport)
            if fingerprint not in pins:
                self._log.error("link {name}: the peer's certificate {fingerprint} is not pinned "
                                "([link] peer_fingerprints)", name=self._who(), fingerprint=fingerprint)
                self.fail("certificate not pinned", "not-authorized")
                return None
        binding = self.settings.binding(self.transport, not self.initiator)
        if not binding:
            self._log.error("link {name}: no TLS 1.3 channel binding; refusing to authenticate",
                            name=self._who())
            self.fail("no channel binding", "encryption-required")
            return None
        return binding

    def _auth(self, kind: str, header: dict[str, Any]) -> None:
        """Connection manager: check the session manager's proof, answer with ours."""
        if kind != "auth":
            raise ValueError(f"expected auth, got {kind}")
        binding = self._binding()
        if binding is None:
            return
        expected = make_proof(self.settings.secret, "sm", self._peer_nonce, self._nonce, binding)
        if not hmac.compare_digest(expected, unb64(header["proof"])):
            self._log.warn("link {name}: the session manager's proof is wrong (different secret, or "
                           "a relayed connection); refused", name=self._who())
            self.fail("authentication failed", "not-authorized")
            return
        session, session_id, resumed, own_h = self.sessions.accept(self._peer_session, self._peer_h)
        proof = make_proof(self.settings.secret, "cm", self._peer_nonce, self._nonce, binding)
        self._send({"t": "ready", "proof": b64(proof), "session": session_id, "resumed": resumed, "h": own_h})
        self._up(session, session_id, resumed, self._peer_h)

    def _ready(self, kind: str, header: dict[str, Any]) -> None:
        """Session manager: check the connection manager's proof; the link is up."""
        if kind != "ready":
            raise ValueError(f"expected ready, got {kind}")
        binding = self._binding()
        if binding is None:
            return
        expected = make_proof(self.settings.secret, "cm", self._nonce, self._peer_nonce, binding)
        if not hmac.compare_digest(expected, unb64(header["proof"])):
            self._log.error("link {name}: the connection manager's proof is wrong (different secret, "
                            "or not the real connection manager); disconnecting", name=self._who())
            self.fail("authentication failed")
            return
        session_id, resumed, h = header["session"], header["resumed"], header["h"]
        if not isinstance(session_id, str) or not isinstance(resumed, bool) or not isinstance(h, int):
            raise ValueError("bad ready")
        self._up(self.sessions, session_id, resumed, h)

    def _up(self, session: LinkSession, session_id: str, resumed: bool, peer_h: int) -> None:
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None
        self.phase = _Phase.READY
        self.MAX_LENGTH = self.settings.config.max_frame_bytes
        self.session = session
        if not session.attach(self, session_id, resumed, peer_h):
            self.session = None
            self.fail("bad resumption", "bad-format")
            return
        self._keepalive_timer = self.clock.callLater(self.settings.config.keepalive_s, self._keepalive)

    def _keepalive(self) -> None:
        self._keepalive_timer = None
        if self.phase != _Phase.READY or self.session is None:
            return
        interval = self.settings.config.keepalive_s
        if self.clock.seconds() - self._last_received > 3 * interval:
            self._log.warn("link {name}: nothing received for {seconds}s; dropping the connection",
                           name=self._who(), seconds=3 * interval)
            self.close_reason = "keepalive timeout"
            self.transport.abortConnection()
            return
        self.session.send_ack()
        self._keepalive_timer = self.clock.callLater(interval, self._keepalive)


_COPIES = frozenset({("urn:xmpp:carbons:2", "sent"), ("urn:xmpp:carbons:2", "received"),
                     ("urn:xmpp:mam:2", "result")})


def needs_settling(stanza: domish.Element) -> bool:
    """True for what must not be lost if a connection manager dies before its client
    acknowledged it: the stanzas XEP-0198 re-delivers or bounces when a session ends
    (``c2s.stream_management.bounce_unacked``): messages with content and IQ requests.

    Chat-state-only messages (which CSI may hold back), groupchat, errors and copies
    (carbons, archive results) are left out, as presence is.
    """
    name = stanza.name
    kind = stanza.getAttribute("type")
    if name == "iq":
        return kind in ("get", "set")
    if name != "message" or kind in ("error", "groupchat"):
        return False
    if holdable(stanza) is not None:
        return False
    for child in stanza.elements():
        if (child.uri, child.name) in _COPIES:
            return False
    return True


def frames_with_stanzas(frames: Iterable[bytes]) -> list[tuple[dict[str, Any], str | None]]:
    """Decode frames kept in an outbox: ``(header, stanza xml or None)`` each."""
    out = []
    for frame in frames:
        header, payload = decode_frame(frame)
        out.append((header, payload.decode("utf-8") if payload is not None else None))
    return out
