"""XEP-0363 HTTP File Upload: the slot component (``upload.<domain>``) and the HTTP side.

A slot request (``<request filename size content-type/>`` in ``urn:xmpp:http:upload:0``)
from a local user gets a PUT URL signed with HMAC-SHA256 (key: ``upload.secret`` in the
data directory, created on first use, owner-only) over the slot id, file name, size,
content type, owner and expiry; it is valid ``slot_lifetime_s``. The GET URL is the same
path without the signature: the slot id (192 random bits) is the capability.

Files live in ``<data_dir>/<storage_dir>/<slot id>/`` as ``data`` and ``meta.json``;
the name a client chose appears only in URLs and in ``Content-Disposition``, never in a
filesystem path. GET answers with the stored type, ``nosniff``, a ``Content-Security-
Policy`` that runs nothing, and ``Content-Disposition: attachment`` unless the type is an
image, audio or video. CORS headers let web clients PUT and GET. Files older than
``expiry_days`` are removed by a periodic sweep on the injected clock.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import unicodedata
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, unquote

from twisted.web import resource
from twisted.protocols.basic import FileSender
from twisted.web.server import NOT_DONE_YET
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish

from tigasepy.components.base import Component
from tigasepy.config import Config
from tigasepy.interfaces import Protocol
from tigasepy.log_level import Logger
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import StanzaError

NS_UPLOAD = "urn:xmpp:http:upload:0"
_SLOT_ID = re.compile(r"^[A-Za-z0-9_-]{32}$")
_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")
_INLINE = ("image/", "audio/", "video/")
_SWEEP_S = 3600
_CORS = ((b"access-control-allow-origin", b"*"),
         (b"access-control-allow-methods", b"GET, HEAD, PUT, OPTIONS"),
         (b"access-control-allow-headers", b"Content-Type"),
         (b"access-control-max-age", b"86400"))


def clean_filename(name: str) -> str:
    """A file name safe to show in a URL and a header: no paths, no control characters."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C" and ch not in "\"';")
    name = name.strip().lstrip(".")[:200]
    return name or "file"


def load_secret(path: Path) -> bytes:
    """The HMAC key at ``path`` (32 random bytes, created owner-only when missing)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key


class UploadStore:
    """Stored files, their owners' usage, signatures and expiry."""

    _log = Logger()

    def __init__(self, root: Path, secret: bytes, clock: Any, expiry_days: int) -> None:
        self.root = root
        self.secret = secret
        self.clock = clock
        self.expiry_days = expiry_days
        root.mkdir(parents=True, exist_ok=True)
        self.usage: dict[str, int] = {}
        self.reserved: dict[str, tuple[str, int, float]] = {}   # slot -> owner, size, expires
        for meta in self._all_meta():
            owner = meta.get("owner", "")
            self.usage[owner] = self.usage.get(owner, 0) + int(meta.get("size", 0))

    def _all_meta(self) -> list[dict[str, Any]]:
        out = []
        for child in self.root.iterdir():
            if _SLOT_ID.match(child.name):
                try:
                    meta = json.loads((child / "meta.json").read_text("utf-8"))
                except (OSError, ValueError):
                    continue
                meta["slot"] = child.name
                out.append(meta)
        return out

    def used(self, owner: str) -> int:
        """Bytes stored and reserved by ``owner``."""
        now = self.clock.seconds()
        pending = sum(size for o, size, expires in self.reserved.values() if o == owner and expires > now)
        return self.usage.get(owner, 0) + pending

    def signature(self, slot: str, filename: str, size: int, content_type: str, owner: str,
                  expires: int) -> str:
        message = "\0".join((slot, filename, str(size), content_type, owner, str(expires))).encode("utf-8")
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def meta(self, slot: str) -> dict[str, Any] | None:
        if not _SLOT_ID.match(slot):
            return None
        try:
            return json.loads((self.root / slot / "meta.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None

    def store(self, slot: str, source: Any, meta: dict[str, Any]) -> bool:
        """Save the body ``source`` (a file object) under ``slot``; False if it exists."""
        folder = self.root / slot
        try:
            folder.mkdir()
        except FileExistsError:
            return False
        with open(folder / "data", "wb") as f:
            shutil.copyfileobj(source, f)
        (folder / "meta.json").write_text(json.dumps(meta), "utf-8")
        self.reserved.pop(slot, None)
        owner = meta["owner"]
        self.usage[owner] = self.usage.get(owner, 0) + meta["size"]
        return True

    def sweep(self) -> int:
        """Remove expired files and reservations; returns how many files went."""
        now = self.clock.seconds()
        self.reserved = {k: v for k, v in self.reserved.items() if v[2] > now}
        if not self.expiry_days:
            return 0
        limit = now - self.expiry_days * 86400
        removed = 0
        for meta in self._all_meta():
            if meta.get("created", now) < limit:
                shutil.rmtree(self.root / meta["slot"], ignore_errors=True)
                owner = meta.get("owner", "")
                self.usage[owner] = max(0, self.usage.get(owner, 0) - int(meta.get("size", 0)))
                removed += 1
        if removed:
            self._log.info("upload: removed {count} expired files", count=removed)
        return removed


class UploadComponent(Component):
    """``upload.<domain>``: disco and slot requests (XEP-0363 section 4)."""

    protocols = (Protocol("XEP-0363", "1.2.0", "complete"),)

    def __init__(self, domain: str, service: "UploadService") -> None:
        super().__init__(domain)
        self.service = service

    def attach(self, router: Any) -> None:
        super().attach(router)
        self.service.start()

    def detach(self) -> None:
        self.service.stop()
        super().detach()

    def on_iq(self, stanza: domish.Element) -> domish.Element | None:
        payload = stanza.firstChildElement()
        kind = stanza.getAttribute("type")
        if payload is None:
            raise StanzaError("bad-request")
        if kind == "get" and payload.uri == ns.DISCO_INFO and not payload.getAttribute("node"):
            return self.service.disco_info()
        if kind == "get" and payload.uri == ns.DISCO_ITEMS and not payload.getAttribute("node"):
            return domish.Element((ns.DISCO_ITEMS, "query"))
        if kind == "get" and payload.uri == NS_UPLOAD and payload.name == "request":
            return self.service.slot(stanza.getAttribute("from", ""), payload)
        raise StanzaError("service-unavailable")


class UploadService:
    """The component, the store and the HTTP resource of XEP-0363."""

    _log = Logger()

    def __init__(self, config: Config, clock: Any, public_base: Callable[[], str]) -> None:
        self.config = config
        self.settings = config.http.upload
        self.clock = clock
        self.public_base = public_base
        self.domains = set(config.server.domains)
        domain = self.settings.domain or f"upload.{config.server.domains[0]}"
        data = config.data_path
        self.store = UploadStore(data / self.settings.storage_dir, load_secret(data / "upload.secret"),
                                 clock, self.settings.expiry_days)
        self.component = UploadComponent(domain, self)
        self.resource = UploadResource(self)
        self._timer: Any = None

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self._timer is None:
            self._timer = self.clock.callLater(_SWEEP_S, self._sweep)

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _sweep(self) -> None:
        self._timer = None
        try:
            self.store.sweep()
        except OSError as e:
            self._log.error("upload: expiry sweep failed: {error}", error=str(e))
        self.start()

    # -- XMPP -----------------------------------------------------------------------------
    def disco_info(self) -> domish.Element:
        query = domish.Element((ns.DISCO_INFO, "query"))
        identity = query.addElement("identity")
        identity["category"] = "store"
        identity["type"] = "file"
        identity["name"] = "HTTP File Upload"
        for feature in (ns.DISCO_INFO, NS_UPLOAD):
            query.addElement("feature")["var"] = feature
        form = query.addElement((ns.DATA_FORMS, "x"))
        form["type"] = "result"
        for var, value in (("FORM_TYPE", NS_UPLOAD), ("max-file-size", str(self.settings.max_file_size))):
            field = form.addElement("field")
            field["var"] = var
            if var == "FORM_TYPE":
                field["type"] = "hidden"
            field.addElement("value", content=value)
        return query

    def slot(self, sender: str, request: domish.Element) -> domish.Element:
        try:
            owner = JID(sender).userhost()
            host = JID(sender).host
        except InvalidFormat:
            raise StanzaError("bad-request") from None
        if host not in self.domains:
            raise StanzaError("not-allowed", "Uploads are for this server's users")
        filename = clean_filename(request.getAttribute("filename", ""))
        try:
            size = int(request.getAttribute("size", ""))
        except ValueError:
            raise StanzaError("bad-request", "size must be a number of bytes") from None
        if size <= 0:
            raise StanzaError("bad-request", "size must be positive")
        content_type = (request.getAttribute("content-type") or "application/octet-stream").strip().lower()
        if not _TYPE.match(content_type):
            raise StanzaError("bad-request", "content-type is not a MIME type")
        settings = self.settings
        if size > settings.max_file_size:
            app = domish.Element((NS_UPLOAD, "file-too-large"))
            app.addElement("max-file-size", content=str(settings.max_file_size))
            raise StanzaError("not-acceptable", f"File too large; the limit is {settings.max_file_size} bytes",
                              error_type="modify", app_condition=app)
        if settings.allowed_content_types and content_type not in settings.allowed_content_types:
            raise StanzaError("not-acceptable", "This content type is not accepted")
        if settings.quota_per_user and self.store.used(owner) + size > settings.quota_per_user:
            raise StanzaError("resource-constraint", "Upload quota exceeded", error_type="wait")
        slot_id = secrets.token_urlsafe(24)
        expires = int(self.clock.seconds()) + settings.slot_lifetime_s
        self.store.reserved[slot_id] = (owner, size, float(expires))
        signature = self.store.signature(slot_id, filename, size, content_type, owner, expires)
        base = f"{self.public_base()}{self.config.http.upload_path}/{slot_id}/{quote(filename)}"
        query = f"?size={size}&type={quote(content_type, safe='')}&owner={quote(owner, safe='')}" \
                f"&expires={expires}&sig={signature}"
        slot = domish.Element((NS_UPLOAD, "slot"))
        put = slot.addElement("put")
        put["url"] = base + query
        slot.addElement("get")["url"] = base
        self._log.info("upload slot for {owner}: {size} bytes", owner=owner, size=size)
        return slot


class UploadResource(resource.Resource):
    """``/upload/<slot>/<name>``: PUT with a signed URL, GET, HEAD, OPTIONS (CORS)."""

    isLeaf = True
    _log = Logger()

    def __init__(self, service: UploadService) -> None:
        super().__init__()
        self.service = service

    def _cors(self, request: Any) -> None:
        for key, value in _CORS:
            request.setHeader(key, value)

    def _fail(self, request: Any, code: int, text: str) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (text + "\n").encode("utf-8")

    def _target(self, request: Any) -> tuple[str, str] | None:
        parts = request.postpath
        if len(parts) != 2:
            return None
        slot = parts[0].decode("ascii", "replace")
        if not _SLOT_ID.match(slot):
            return None
        return slot, unquote(parts[1].decode("utf-8", "replace"))

    def render_OPTIONS(self, request: Any) -> bytes:
        self._cors(request)
        request.setResponseCode(204)
        return b""

    def render_PUT(self, request: Any) -> bytes:
        self._cors(request)
        target = self._target(request)
        if target is None:
            return self._fail(request, 404, "no such slot")
        slot, filename = target
        args = {k.decode("ascii", "replace"): v[0].decode("utf-8", "replace") for k, v in request.args.items()}
        store = self.service.store
        try:
            size = int(args["size"])
            expires = int(args["expires"])
            content_type, owner, sig = args["type"], args["owner"], args["sig"]
        except (KeyError, ValueError):
            return self._fail(request, 403, "not a valid upload URL")
        expected = store.signature(slot, filename, size, content_type, owner, expires)
        if not hmac.compare_digest(expected, sig):
            return self._fail(request, 403, "not a valid upload URL")
        if expires < self.service.clock.seconds():
            return self._fail(request, 403, "this upload URL has expired")
        sent_type = (request.getHeader(b"content-type") or b"").decode("latin-1").split(";")[0].strip().lower()
        if sent_type and sent_type != content_type:
            return self._fail(request, 400, "Content-Type differs from the slot request")
        body = request.content
        body.seek(0, os.SEEK_END)
        length = body.tell()
        body.seek(0)
        if length != size:
            return self._fail(request, 400, "the body size differs from the slot request")
        meta = {"filename": filename, "size": size, "content_type": content_type, "owner": owner,
                "created": self.service.clock.seconds()}
        if not store.store(slot, body, meta):
            return self._fail(request, 409, "this slot was already used")
        request.setResponseCode(201)
        return b""

    def render_HEAD(self, request: Any) -> Any:
        return self.render_GET(request)

    def render_GET(self, request: Any) -> Any:
        self._cors(request)
        target = self._target(request)
        meta = self.service.store.meta(target[0]) if target is not None else None
        if meta is None or target is None or target[1] != meta["filename"]:
            return self._fail(request, 404, "not found")
        slot = target[0]
        content_type = meta["content_type"]
        request.setHeader(b"content-type", content_type.encode("ascii"))
        request.setHeader(b"content-security-policy", b"default-src 'none'; sandbox")
        disposition = "inline" if content_type.startswith(_INLINE) else "attachment"
        request.setHeader(b"content-disposition",
                          f"{disposition}; filename*=UTF-8''{quote(meta['filename'], safe='')}".encode("ascii"))
        request.setHeader(b"cache-control", b"public, max-age=31536000, immutable")
        path = self.service.store.root / slot / "data"
        try:
            f = open(path, "rb")
        except OSError:
            return self._fail(request, 404, "not found")
        size = os.fstat(f.fileno()).st_size
        request.setHeader(b"content-length", str(size).encode())
        if request.method == b"HEAD":
            f.close()
            return b""
        d = FileSender().beginFileTransfer(f, request)

        def done(_: Any) -> None:
            f.close()
            if not request.finished and not request._disconnected:
                request.finish()

        d.addBoth(done)
        return NOT_DONE_YET
