"""The ``[http]`` listener: one ``twisted.web`` Site for web clients.

Paths (``[http]`` names them):

- ``/xmpp-websocket``: RFC 7395 XMPP over WebSocket (``websocket.py``);
- ``/http-bind``: XEP-0124/0206 BOSH (``bosh.py``);
- ``/upload/...``: XEP-0363 PUT and GET (``upload.py``; slots come from the component);
- ``/.well-known/host-meta`` and ``host-meta.json``: XEP-0156 discovery of the above.

Client sessions on the web reuse the c2s negotiation (``framing.py``). They count as
secure over HTTPS, or over plain HTTP when ``behind_tls_proxy`` says a TLS proxy is in
front; otherwise, with ``[c2s] tls_required``, WebSocket and BOSH are refused on the
plain-HTTP port. Every response says ``X-Content-Type-Options: nosniff``; request
bodies are capped (``max_request_bytes``, uploads at ``max_file_size``) before they are
buffered, and header counts and sizes by twisted.web's own limits.
"""

from __future__ import annotations

import json
from typing import Any, Callable
from xml.sax.saxutils import quoteattr

from twisted.internet import endpoints
from twisted.web import pages, resource, server

from tigasepy.c2s.factory import ClientStreamFactory
from tigasepy.config import Config
from tigasepy.http.framing import FramedClientStream
from tigasepy.log_level import Logger

_log = Logger()


class LimitedRequest(server.Request):
    """A request whose body may not exceed the site's cap for its path (413 otherwise)."""

    _received = 0
    _refused = False

    def _limit(self) -> int:
        channel: Any = self.channel
        path = getattr(channel, "_path", b"") or b""
        return channel.site.body_limit(path)

    def _refuse(self) -> None:
        self._refused = True
        transport: Any = self.channel.transport
        transport.write(b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n"
                        b"Content-Length: 0\r\n\r\n")
        transport.loseConnection()

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limit():
            self._refuse()
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._limit():
            self._refuse()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if self._refused:
            return
        self.setHeader(b"x-content-type-options", b"nosniff")
        super().process()


class XmppSite(server.Site):
    """The Site: limits per path, no access log lines with query strings (upload tokens)."""

    requestFactory = LimitedRequest

    def __init__(self, root: resource.Resource, config: Config, upload_prefix: bytes, clock: Any) -> None:
        super().__init__(root, reactor=clock)
        self.http = config.http
        self.upload_prefix = upload_prefix
        self.timeOut = 60

    def body_limit(self, path: bytes) -> int:
        if path.startswith(self.upload_prefix):
            return max(self.http.upload.max_file_size, self.http.max_request_bytes)
        return self.http.max_request_bytes

    def log(self, request: Any) -> None:
        """Access log without query strings (they carry upload signatures)."""
        path = request.path.split(b"?", 1)[0] if request.path else b""
        _log.debug("http {method} {path} {code}", method=request.method.decode("latin-1", "replace"),
                   path=path.decode("latin-1", "replace"), code=request.code)


class HostMeta(resource.Resource):
    """XEP-0156: ``host-meta`` (XRD) or ``host-meta.json`` (JRD) naming the web endpoints."""

    isLeaf = True

    def __init__(self, links: Callable[[Any], list[tuple[str, str]]], json_form: bool) -> None:
        super().__init__()
        self.links = links
        self.json_form = json_form

    def render_GET(self, request: Any) -> bytes:
        links = self.links(request)
        request.setHeader(b"access-control-allow-origin", b"*")
        if self.json_form:
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"links": [{"rel": rel, "href": href} for rel, href in links]},
                              indent=1).encode("utf-8")
        request.setHeader(b"content-type", b"application/xrd+xml; charset=utf-8")
        lines = ["<?xml version='1.0' encoding='utf-8'?>",
                 "<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>"]
        lines += [f"  <Link rel={quoteattr(rel)} href={quoteattr(href)}/>" for rel, href in links]
        lines.append("</XRD>\n")
        return "\n".join(lines).encode("utf-8")


class _Empty(resource.Resource):
    def getChild(self, path: bytes, request: Any) -> resource.Resource:
        return pages.notFound()

    def render_GET(self, request: Any) -> bytes:
        request.setResponseCode(404)
        return b""


class HttpFrontend:
    """Builds the Site and its listeners for ``[http]`` (see ``TigaseService``)."""

    def __init__(self, config: Config, clock: Any, tls_context: Any, sm: Any, auth: Any,
                 connections: set[Any], resumption: Any, router: Any = None) -> None:
        self.config = config
        self.clock = clock
        self.tls_context = tls_context
        self.port_of: Callable[[str], int] | None = None
        http = config.http
        domain = config.server.domains[0]
        self.factory = ClientStreamFactory(config.c2s, sm, auth, clock, None, lambda transport: None, domain,
                                           connections=connections, resumption=resumption)
        root = _Empty()
        from tigasepy.http.websocket import XmppWebSocketResource

        self.websocket = XmppWebSocketResource(self._make_stream, self._allowed, self._secure,
                                               http.websocket_max_frame_bytes, http.websocket_ping_s, clock)
        root.putChild(http.websocket_path[1:].encode(), self.websocket)
        from tigasepy.http.bosh import BoshResource

        self.bosh = BoshResource(http, self._make_stream, self._allowed, self._secure, clock)
        root.putChild(http.bosh_path[1:].encode(), self.bosh)
        well_known = _Empty()
        well_known.putChild(b"host-meta", HostMeta(self.links, json_form=False))
        well_known.putChild(b"host-meta.json", HostMeta(self.links, json_form=True))
        root.putChild(b".well-known", well_known)
        self.upload: Any = None
        if http.upload.enabled and router is not None:
            from tigasepy.http.upload import UploadService

            self.upload = UploadService(config, clock, self.public_base)
            root.putChild(http.upload_path[1:].encode(), self.upload.resource)
        self.site = XmppSite(root, config, http.upload_path.encode() + b"/", clock)

    # -- endpoints ------------------------------------------------------------------------
    def endpoints(self, reactor: Any) -> list[tuple[str, Any]]:
        """(listener name, server endpoint) for the plain and the TLS port."""
        http = self.config.http
        out: list[tuple[str, Any]] = []
        if http.port:
            out.append(("http", endpoints.TCP4ServerEndpoint(reactor, http.port, interface=http.interface)))
        if http.tls_port and self.tls_context is not None:
            out.append(("https", endpoints.SSL4ServerEndpoint(reactor, http.tls_port, self.tls_context,
                                                             interface=http.interface)))
        return out

    def public_base(self, request: Any = None) -> str:
        """The base URL clients use: ``public_url``, else https://<domain>:<tls_port>."""
        http = self.config.http
        if http.public_url:
            return http.public_url.rstrip("/")
        domain = self.config.server.domains[0]
        if http.tls_port:
            return f"https://{domain}:{self.bound_port('https') or http.tls_port}"
        return f"http://{domain}:{self.bound_port('http') or http.port}"

    def bound_port(self, name: str) -> int | None:
        """The port listener ``name`` actually listens on (``port_of``, set by the service)."""
        try:
            return self.port_of(name) if self.port_of is not None else None
        except Exception:
            return None

    def links(self, request: Any) -> list[tuple[str, str]]:
        base = self.public_base(request)
        ws_base = "wss://" + base[len("https://"):] if base.startswith("https://") else \
            "ws://" + base[len("http://"):]
        http = self.config.http
        return [("urn:xmpp:alt-connections:xbosh", base + http.bosh_path),
                ("urn:xmpp:alt-connections:websocket", ws_base + http.websocket_path)]

    # -- client streams -------------------------------------------------------------------
    def _secure(self, request: Any) -> bool:
        return bool(request.isSecure()) or self.config.http.behind_tls_proxy

    def _allowed(self, request: Any) -> bool:
        return self._secure(request) or not self.config.c2s.tls_required

    def _make_stream(self, secure: bool) -> FramedClientStream:
        return FramedClientStream(self.factory, direct_tls=secure)

    def reconfigure(self, config: Config) -> None:
        self.factory.reconfigure(config.c2s)

    def close_all(self) -> None:
        if self.upload is not None:
            self.upload.stop()
