"""XEP-0124 BOSH with XEP-0206 (XMPP over BOSH).

A session is a ``FramedClientStream`` (the c2s negotiation) whose output is queued and
handed out in the bodies of held HTTP requests. Per session:

- creation (no ``sid``): ``to``, ``wait`` (capped at ``bosh_max_wait_s``), ``hold``
  (capped at ``bosh_max_hold``), ``ver``, ``xmpp:version``; the answer names ``sid``,
  ``requests`` (hold + 1), ``inactivity``, ``polling``, ``maxpause``, ``authid``;
- ``rid``: each request must fall within the window (last rid, last rid + requests];
  a request ahead of a missing one waits for it; a repeated rid gets its cached answer
  again (a broken connection, section 14.3); anything else ends the session
  (``item-not-found``);
- held requests are answered when output is ready, after ``wait`` with an empty body,
  or at once when more than ``hold`` are held (the oldest goes first);
  more than ``requests`` at once is overactivity (``policy-violation``);
- ``xmpp:restart='true'`` restarts the stream after SASL (section 5 of XEP-0206);
  ``type='terminate'`` ends it; ``pause`` (up to ``bosh_max_pause_s``) stretches
  the inactivity limit once;
- with no request held for ``inactivity`` seconds the session ends like a dropped TCP
  connection (a XEP-0198 resumable session may be resumed elsewhere).

The output queue is bounded (``bosh_max_queued`` elements; beyond it the session ends).
Bodies are capped by the Site (``max_request_bytes``) and parsed with the bounded
stream parser; stanzas are fed to the ClientStream one by one.
"""

from __future__ import annotations

import collections
import secrets
from typing import Any, Callable

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.words.xish import domish

from tigasepy.config import HttpConfig
from tigasepy.http.framing import FramedClientStream, MessageSink, attach, detach
from tigasepy.log_level import Logger
from tigasepy.stream.parser import StreamParseError, StreamParser
from tigasepy.xmpp.serialize import to_xml

NS_BOSH = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
_CORS = ((b"access-control-allow-origin", b"*"),
         (b"access-control-allow-methods", b"POST, OPTIONS"),
         (b"access-control-allow-headers", b"Content-Type"),
         (b"access-control-max-age", b"86400"))


class BodyError(Exception):
    """Not a BOSH ``<body/>``."""


def parse_body(data: bytes, max_bytes: int, max_depth: int = 32) -> domish.Element:
    """The ``<body/>`` element of a request (bounded parser, no DTDs)."""
    data = data.strip()
    if data.startswith(b"<?xml"):
        end = data.find(b"?>")
        if end == -1:
            raise BodyError("bad XML declaration")
        data = data[end + 2:]
    out: list[domish.Element] = []
    parser = StreamParser(lambda header: None, out.append, lambda: None, max_stanza_bytes=max_bytes,
                          max_depth=max_depth)
    try:
        parser.feed(b"<w>" + data + b"</w>")
    except StreamParseError as e:
        raise BodyError(e.text or e.condition) from None
    if len(out) != 1 or out[0].name != "body" or out[0].uri != NS_BOSH:
        raise BodyError("expected one <body/> in " + NS_BOSH)
    return out[0]


def _body(attrs: dict[str, str] | None = None, payload: list[bytes] | None = None) -> bytes:
    head = [f"<body xmlns='{NS_BOSH}'"]
    for key, value in (attrs or {}).items():
        head.append(f" {key}='{value}'")
    if not payload:
        return ("".join(head) + "/>").encode("utf-8")
    return ("".join(head) + ">").encode("utf-8") + b"".join(payload) + b"</body>"


class BoshSession(MessageSink):
    """One BOSH session carrying one client stream."""

    _log = Logger()

    def __init__(self, owner: "BoshResource", sid: str, stream: FramedClientStream, rid: int,
                 wait: int, hold: int, to: str, peer: Any) -> None:
        self.owner = owner
        self.config = owner.config
        self.clock = owner.clock
        self.sid = sid
        self.stream = stream
        self.rid = rid                      # the last rid processed
        self.wait = wait
        self.hold = hold
        self.requests = hold + 1
        self.to = to
        self._peer = peer
        self.stream_id = ""
        self.held: collections.deque[tuple[int, Any, Any]] = collections.deque()
        self.ahead: dict[int, tuple[Any, domish.Element]] = {}
        self.answers: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self.pending: list[bytes] = []
        self.terminated = False
        self._condition: str | None = None
        self._flush_call: Any = None
        self._inactivity: Any = None
        self._pause_s = 0
        self.final: bytes | None = None

    # -- MessageSink -----------------------------------------------------------------------
    def send_open(self, stream_id: str, domain: str) -> None:
        self.stream_id = stream_id

    def send_element(self, data: bytes) -> None:
        if self.terminated:
            return
        self.pending.append(data)
        if len(self.pending) > self.config.bosh_max_queued:
            self._log.info("bosh session: output queue full; ending it")
            self.pending.clear()
            self.end("policy-violation")
            return
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush)

    def send_close(self) -> None:
        self.end(None)

    def drop(self, abort: bool) -> None:
        self.end(None)

    def peer(self) -> Any:
        return self._peer

    # -- requests --------------------------------------------------------------------------
    def request(self, request: Any, body: domish.Element, rid: int) -> Any:
        if self.terminated:
            return self.owner.answer(request, self.final or _body({"type": "terminate"}))
        if rid <= self.rid:
            cached = self.answers.get(rid)
            if cached is None:
                self.end("item-not-found")
                return self.owner.answer(request, _body({"type": "terminate", "condition": "item-not-found"}))
            return self.owner.answer(request, cached)
        if rid > self.rid + self.requests:
            self.end("item-not-found")
            return self.owner.answer(request, _body({"type": "terminate", "condition": "item-not-found"}))
        if len(self.held) + len(self.ahead) >= self.requests:
            self._log.info("bosh session: more than {n} simultaneous requests", n=self.requests)
            self.end("policy-violation")
            return self.owner.answer(request, _body({"type": "terminate", "condition": "policy-violation"}))
        self._cancel_inactivity()
        if rid != self.rid + 1:
            self.ahead[rid] = (request, body)
            self._watch(request, rid)
            return NOT_DONE_YET
        self._process(request, body, rid)
        while self.rid + 1 in self.ahead and not self.terminated:
            next_request, next_body = self.ahead.pop(self.rid + 1)
            self._process(next_request, next_body, self.rid + 1, watch=False)
        return NOT_DONE_YET

    def _watch(self, request: Any, rid: int) -> None:
        request.notifyFinish().addErrback(lambda _: self._gone(request, rid))

    def _gone(self, request: Any, rid: int) -> None:
        for held in self.held:
            if held[1] is request and held[2].active():
                held[2].cancel()
        self.held = collections.deque(h for h in self.held if h[1] is not request)
        self.ahead.pop(rid, None)
        if not self.held and not self.terminated:
            self._start_inactivity()

    def _process(self, request: Any, body: domish.Element, rid: int, watch: bool = True) -> None:
        self.rid = rid
        pause = body.getAttribute("pause")
        if pause is not None and pause.isdigit():
            self._pause_s = min(int(pause), self.config.bosh_max_pause_s)
        timer = self.clock.callLater(self.wait, self._expire, request)
        self.held.append((rid, request, timer))
        if watch:
            self._watch(request, rid)
        stream = self.stream
        for child in body.elements():
            if self.terminated:
                break
            stream.dataReceived(to_xml(child).encode("utf-8"))
        if not self.terminated:
            if body.getAttribute((NS_XBOSH, "restart")) in ("true", "1"):
                stream.open_received({"to": body.getAttribute("to") or self.to, "version": "1.0"})
            if body.getAttribute("type") == "terminate":
                stream.dataReceived(b"</stream:stream>")
        if self.terminated:
            return
        while len(self.held) > self.hold:
            self._answer_oldest([])
        if self.pending and self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush)

    def _expire(self, request: Any) -> None:
        for index, (rid, held, timer) in enumerate(self.held):
            if held is request:
                del self.held[index]
                self._respond(rid, request, _body())
                break
        if not self.held and not self.terminated:
            self._start_inactivity()

    def _answer_oldest(self, payload: list[bytes], attrs: dict[str, str] | None = None) -> None:
        rid, request, timer = self.held.popleft()
        if timer.active():
            timer.cancel()
        self._respond(rid, request, _body(attrs, payload))

    def _respond(self, rid: int, request: Any, data: bytes) -> None:
        self.answers[rid] = data
        while len(self.answers) > self.requests:
            self.answers.popitem(last=False)
        self.owner.answer(request, data)

    def _flush(self) -> None:
        self._flush_call = None
        if self.pending and self.held:
            payload, self.pending = self.pending, []
            self._answer_oldest(payload)
            if not self.held and not self.terminated:
                self._start_inactivity()

    # -- the end ---------------------------------------------------------------------------
    def end(self, condition: str | None) -> None:
        """Terminate: the held requests get ``type='terminate'``, the stream is detached."""
        if self.terminated:
            return
        self.terminated = True
        self._cancel_inactivity()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        attrs = {"type": "terminate"}
        if condition:
            attrs["condition"] = condition
        payload, self.pending = self.pending, []
        self.final = _body(attrs, payload)
        if self.held:
            self._answer_oldest(payload, attrs)
        while self.held:
            self._answer_oldest([], attrs)
        for request, _ in self.ahead.values():
            self.owner.answer(request, _body(attrs))
        self.ahead.clear()
        self.owner.forget(self)
        if self.stream.transport is not None:
            self.clock.callLater(0, detach, self.stream)

    def _start_inactivity(self) -> None:
        self._cancel_inactivity()
        limit = self.config.bosh_inactivity_s + self._pause_s
        self._pause_s = 0
        self._inactivity = self.clock.callLater(limit, self._inactive)

    def _cancel_inactivity(self) -> None:
        if self._inactivity is not None and self._inactivity.active():
            self._inactivity.cancel()
        self._inactivity = None

    def _inactive(self) -> None:
        self._inactivity = None
        self._log.info("bosh session inactive; ending it")
        self.end(None)


class BoshResource(Resource):
    """The XEP-0124 endpoint: POSTed ``<body/>`` elements, CORS for browsers."""

    isLeaf = True
    _log = Logger()

    def __init__(self, config: HttpConfig, make_stream: Callable[[bool], FramedClientStream],
                 allowed: Callable[[Any], bool], secure: Callable[[Any], bool], clock: Any) -> None:
        super().__init__()
        self.config = config
        self.make_stream = make_stream
        self.allowed = allowed
        self.secure = secure
        self.clock = clock
        self.sessions: dict[str, BoshSession] = {}

    def answer(self, request: Any, data: bytes) -> bytes:
        """Write ``data`` as the response of ``request`` (if it is still there)."""
        if request.finished or getattr(request, "_disconnected", False):
            return b""
        if getattr(request, "startedWriting", False):
            return b""
        request.setHeader(b"content-type", b"text/xml; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        for key, value in _CORS:
            request.setHeader(key, value)
        if getattr(request, "_bosh_async", False):
            request.write(data)
            request.finish()
            return b""
        return data

    def forget(self, session: BoshSession) -> None:
        self.sessions.pop(session.sid, None)

    def render_OPTIONS(self, request: Any) -> bytes:
        for key, value in _CORS:
            request.setHeader(key, value)
        request.setResponseCode(204)
        return b""

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"XEP-0124 BOSH: POST <body/> elements here.\n"

    def render_POST(self, request: Any) -> Any:
        if not self.allowed(request):
            request.setResponseCode(403)
            return b"BOSH needs TLS here: use https://\n"
        data = request.content.read(self.config.max_request_bytes + 1)
        try:
            body = parse_body(data, self.config.max_request_bytes)
            rid = int(body.getAttribute("rid", ""))
            if not 0 < rid < 2 ** 53:
                raise ValueError
        except (BodyError, ValueError):
            request.setResponseCode(400)
            return self.answer(request, _body({"type": "terminate", "condition": "bad-request"}))
        sid = body.getAttribute("sid")
        if not sid:
            return self._create(request, body, rid)
        session = self.sessions.get(sid)
        if session is None:
            return self.answer(request, _body({"type": "terminate", "condition": "item-not-found"}))
        request._bosh_async = True
        session.request(request, body, rid)
        return NOT_DONE_YET

    def _create(self, request: Any, body: domish.Element, rid: int) -> Any:
        config = self.config
        to = (body.getAttribute("to") or "").lower()
        if len(self.sessions) >= config.max_sessions:
            return self.answer(request, _body({"type": "terminate", "condition": "policy-violation"}))
        if not to:
            return self.answer(request, _body({"type": "terminate", "condition": "improper-addressing"}))
        try:
            wait = max(1, min(int(body.getAttribute("wait", str(config.bosh_max_wait_s))),
                              config.bosh_max_wait_s))
            hold = max(1, min(int(body.getAttribute("hold", "1")), config.bosh_max_hold))
        except ValueError:
            request.setResponseCode(400)
            return self.answer(request, _body({"type": "terminate", "condition": "bad-request"}))
        sid = secrets.token_urlsafe(18)
        stream = self.make_stream(self.secure(request))
        session = BoshSession(self, sid, stream, rid, wait, hold, to, request.getClientAddress())
        self.sessions[sid] = session
        attach(stream, session)
        stream.open_received({"to": to, "version": body.getAttribute((NS_XBOSH, "version")) or "1.0"})
        if session.terminated:
            return self.answer(request, session.final or _body({"type": "terminate"}))
        attrs = {"xmlns:xmpp": NS_XBOSH, "xmlns:stream": "http://etherx.jabber.org/streams",
                 "sid": sid, "wait": str(wait), "hold": str(hold), "requests": str(session.requests),
                 "inactivity": str(config.bosh_inactivity_s), "polling": "2",
                 "maxpause": str(config.bosh_max_pause_s), "ver": "1.11", "from": to,
                 "authid": session.stream_id, "xmpp:version": "1.0", "xmpp:restartlogic": "true"}
        if session._flush_call is not None and session._flush_call.active():
            session._flush_call.cancel()
        session._flush_call = None
        payload, session.pending = session.pending, []
        data = _body(attrs, payload)
        session.answers[rid] = data
        session._start_inactivity()
        self._log.info("bosh session created for {to} from {peer}", to=to, peer=session._peer)
        return self.answer(request, data)

    def close_all(self) -> None:
        for session in list(self.sessions.values()):
            session.end("system-shutdown")
