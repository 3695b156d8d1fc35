"""A bounded, incremental XML stream parser (RFC 6120 section 11).

Builds ``domish.Element`` stanzas from an expat parser with the limits that
``domish.ExpatElementStream`` lacks: bytes per stanza, element depth, and the
restricted XML subset (no DTDs, comments, processing instructions or entities).

Stanza elements in the stream's content namespace (``jabber:client``,
``jabber:server``) get ``uri=None``, so a stanza is namespace-neutral and is
serialized into whatever stream it is written to.
"""

from __future__ import annotations

from typing import Callable
from xml.parsers import expat
from xml.sax.saxutils import quoteattr

from twisted.words.xish import domish

_XML_NS = "http://www.w3.org/XML/1998/namespace"
_STREAMS_NS = "http://etherx.jabber.org/streams"
_HEADER_LIMIT = 16


def _replay_header(declarations: tuple[tuple[str | None, str], ...]) -> bytes | None:
    """A stream header declaring ``declarations`` (prefix, uri), to restart a parked parser.

    The stream element gets the prefix bound to the streams namespace, so that the peer's
    closing tag still matches; None when there is no single such prefix.
    """
    prefixes = [prefix for prefix, uri in declarations if prefix and uri == _STREAMS_NS]
    if len(prefixes) != 1:
        return None
    attrs = "".join(f" xmlns:{prefix}={quoteattr(uri)}" if prefix else f" xmlns={quoteattr(uri)}"
                    for prefix, uri in declarations)
    return f"<{prefixes[0]}:stream{attrs}>".encode("utf-8")


# What nearly every client declares: its parked parsers share one replay header.
_COMMON_DECLARATIONS = {
    frozenset({(None, content), ("stream", _STREAMS_NS)}): _replay_header(((None, content), ("stream", _STREAMS_NS)))
    for content in ("jabber:client", "jabber:server", "jabber:component:accept")
}


class StreamParseError(Exception):
    """The peer broke the XML rules; ``condition`` is the RFC 6120 stream error to send."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(condition, text)
        self.condition = condition
        self.text = text


class StreamParser:
    """Feed bytes in, get callbacks for the stream header, each stanza and the stream end.

    Args:
        on_start: called with the ``stream:stream`` attributes (qualified keys as
            ``"uri name"`` strings flattened to local names, ``xml:lang`` kept as ``"xml:lang"``).
        on_element: called with each complete top-level element.
        on_end: called when the peer closes the stream.
        max_stanza_bytes: bytes one top-level element (or anything between two) may take.
        max_depth: nesting depth allowed inside a stanza.
    """

    # One per open stream.
    __slots__ = ("_on_start", "_on_element", "_on_end", "max_stanza_bytes", "max_depth",
                 "content_namespace", "_replay", "_replaying", "_declarations", "_parser", "_stack",
                 "_depth", "_stanza_start", "_fed", "_mark", "_error", "_started", "_ended",
                 "_default_namespace")

    def __init__(self, on_start: Callable[[dict[str, str]], None],
                 on_element: Callable[[domish.Element], None], on_end: Callable[[], None],
                 max_stanza_bytes: int, max_depth: int = 32) -> None:
        self._on_start = on_start
        self._on_element = on_element
        self._on_end = on_end
        self.max_stanza_bytes = max_stanza_bytes
        self.max_depth = max_depth
        self.content_namespace: str | None = None
        self._replay: bytes | None = None
        self._reset()

    @property
    def parked(self) -> bool:
        """True while the expat parser is dropped (see ``park``)."""
        return self._parser is None

    def park(self) -> bool:
        """Drop the expat parser of an idle stream (its tables are most of an idle stream's
        memory); the next ``feed`` builds a new one, restarted with the same namespace
        declarations as the stream header. Only between stanzas, with no input pending.

        Returns True when the parser is parked.
        """
        parser = self._parser
        if parser is None:
            return True
        if (not self._started or self._ended or self._depth != 1 or self._stack
                or self._error is not None or parser.CurrentByteIndex != self._fed):
            return False
        if self._replay is None:
            declarations = tuple(self._declarations or ())
            replay = _COMMON_DECLARATIONS.get(frozenset(declarations))
            if replay is None:
                if len(declarations) > _HEADER_LIMIT:
                    return False
                replay = _replay_header(declarations)
                if replay is None:
                    return False
            self._replay = replay
        self._declarations = None
        self._parser = None
        return True

    def _unpark(self) -> None:
        replay = self._replay
        assert replay is not None
        self._new_parser()
        self._depth = 0
        self._replaying = True
        try:
            self._parser.Parse(replay, False)
        finally:
            self._replaying = False
        self._fed = self._mark = len(replay)

    def _new_parser(self) -> None:
        parser = expat.ParserCreate("UTF-8", " ")
        parser.buffer_text = True
        # expat's default 8 KiB text buffer is most of an idle connection's parser memory.
        parser.buffer_size = 1024
        parser.ordered_attributes = False
        parser.StartNamespaceDeclHandler = self._namespace_declared
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._text
        parser.StartDoctypeDeclHandler = self._restricted
        parser.CommentHandler = self._restricted
        parser.ProcessingInstructionHandler = self._restricted
        parser.EntityDeclHandler = self._restricted
        parser.StartCdataSectionHandler = None
        parser.DefaultHandler = None
        self._parser: expat.XMLParserType | None = parser

    def _reset(self) -> None:
        self._new_parser()
        self._replay = None
        self._replaying = False
        self._declarations: list[tuple[str | None, str]] | None = []
        self._stack: list[domish.Element] = []
        self._depth = 0
        self._stanza_start = 0
        self._fed = 0
        self._mark = 0
        self._error: StreamParseError | None = None
        self._started = False
        self._ended = False
        self._default_namespace: str | None = None

    def reset(self) -> None:
        """Start over with a fresh parser: after STARTTLS and SASL the stream restarts."""
        self._reset()

    def feed(self, data: bytes) -> None:
        """Parse ``data``; raises ``StreamParseError`` when the peer breaks a rule or a limit."""
        if self._ended:
            return
        if self._parser is None:
            self._unpark()
        self._fed += len(data)
        try:
            self._parser.Parse(data, False)
        except expat.ExpatError as e:
            if self._error is not None:
                raise self._error from None
            raise StreamParseError("not-well-formed", str(e)) from None
        if self._error is not None:
            raise self._error
        # Before the header is complete ``_mark`` is 0: an endless header is cut off too.
        if self._fed - self._mark > self.max_stanza_bytes:
            raise StreamParseError("policy-violation", "stanza too large")

    def _fail(self, condition: str, text: str) -> None:
        if self._error is not None:
            # Replacing the text handler below flushes buffered text into ``_text`` again.
            raise self._error
        self._error = StreamParseError(condition, text)
        # Stop expat at once; feed() raises the recorded error.
        self._parser.StartElementHandler = None
        self._parser.EndElementHandler = None
        self._parser.CharacterDataHandler = None
        raise self._error

    def _restricted(self, *args: object) -> None:
        self._fail("restricted-xml", "DTDs, comments, processing instructions and entities are not allowed")

    def _namespace_declared(self, prefix: str | None, uri: str) -> None:
        if self._depth == 0:
            if not prefix:
                self._default_namespace = uri
            if self._declarations is not None:
                self._declarations.append((prefix, uri))

    def _split(self, qname: str) -> tuple[str | None, str]:
        uri, _, local = qname.rpartition(" ")
        return (uri or None), local

    def _start(self, qname: str, attrs: dict[str, str]) -> None:
        uri, name = self._split(qname)
        if self._depth == 0:
            self._depth = 1
            if self._replaying:
                return
            self._started = True
            self._mark = self._parser.CurrentByteIndex + 1
            header = {}
            for key, value in attrs.items():
                auri, _, local = key.rpartition(" ")
                header["xml:lang" if auri == _XML_NS else local] = value
            if self._default_namespace is not None:
                header["xmlns"] = self._default_namespace
            header["__uri__"] = uri or ""
            header["__name__"] = name
            self._on_start(header)
            return
        self._depth += 1
        if self._depth - 1 > self.max_depth:
            self._fail("policy-violation", "elements nested too deeply")
        # A stanza in the stream's content namespace becomes namespace-neutral; the same
        # namespace nested under a foreign element (a forwarded message) keeps its uri.
        if uri == self.content_namespace and (not self._stack or self._stack[-1].uri is None):
            uri = None
        element = domish.Element((uri, name), defaultUri=uri)
        for key, value in attrs.items():
            if " " in key:
                auri, _, local = key.rpartition(" ")
                element.attributes[(auri, local)] = value
            else:
                element.attributes[key] = value
        if self._stack:
            self._stack[-1].addChild(element)
        else:
            self._stanza_start = self._parser.CurrentByteIndex
        self._stack.append(element)

    def _end(self, qname: str) -> None:
        if self._depth == 1:
            self._depth = 0
            self._ended = True
            self._on_end()
            return
        self._depth -= 1
        element = self._stack.pop()
        if not self._stack:
            if self._parser.CurrentByteIndex - self._stanza_start > self.max_stanza_bytes:
                self._fail("policy-violation", "stanza too large")
            self._mark = self._fed
            self._on_element(element)

    def _text(self, data: str) -> None:
        if self._stack:
            self._stack[-1].addContent(data)
        elif self._depth == 1 and not data.strip():
            self._mark = self._fed
        elif self._depth == 1:
            self._fail("bad-format", "text is not allowed between stanzas")


def parse_stanza(xml: str | bytes, content_namespace: str = "jabber:client",
                 max_bytes: int = 1 << 20) -> domish.Element:
    """Parse one serialized, namespace-neutral stanza (as stored offline) back into an element."""
    out: list[domish.Element] = []
    parser = StreamParser(lambda header: None, out.append, lambda: None, max_stanza_bytes=max_bytes)
    parser.content_namespace = content_namespace
    parser.feed(f"<stream:stream xmlns='{content_namespace}' "
                "xmlns:stream='http://etherx.jabber.org/streams'>".encode())
    parser.feed(xml if isinstance(xml, bytes) else xml.encode("utf-8"))
    if len(out) != 1:
        raise StreamParseError("bad-format", "expected exactly one stanza")
    return out[0]
