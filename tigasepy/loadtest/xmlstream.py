"""A lean incremental XML stream reader for the load-test client (RFC 6120 section 4).

The server's ``tigasepy.stream.parser.StreamParser`` builds ``domish.Element``s and
enforces the limits a server needs against hostile peers. A load generator talks to
a server it chose, and its parsing cost must stay well below the server's, so this
reader builds the smallest possible tree: ``Node`` objects whose ``qname`` is expat's
``"namespace local"`` string, compared as a whole and never split. It still bounds
what it buffers (``max_stanza_bytes``), since the server under test may be broken.
"""

from __future__ import annotations

from typing import Callable, Iterator
from xml.parsers import expat

STREAMS = "http://etherx.jabber.org/streams"
CLIENT = "jabber:client"


class StreamClosed(Exception):
    """The server's XML could not be read (``reason`` says why)."""


class Node:
    """One element: its ``"uri local"`` name, attributes, children and text."""

    __slots__ = ("qname", "attrs", "children", "text")

    def __init__(self, qname: str, attrs: dict[str, str]) -> None:
        self.qname = qname
        self.attrs = attrs
        self.children: list[Node] = []
        self.text = ""

    @property
    def name(self) -> str:
        """The local name."""
        return self.qname.rpartition(" ")[2]

    @property
    def uri(self) -> str:
        """The namespace URI ("" for none)."""
        return self.qname.rpartition(" ")[0]

    def get(self, key: str, default: str | None = None) -> str | None:
        """The attribute ``key`` (unqualified) or ``default``."""
        return self.attrs.get(key, default)

    def child(self, qname: str) -> "Node | None":
        """The first child named ``qname`` (``"uri local"``), or None."""
        for c in self.children:
            if c.qname == qname:
                return c
        return None

    def find(self, local: str) -> Iterator["Node"]:
        """Children whose local name is ``local``, whatever their namespace."""
        for c in self.children:
            if c.qname.endswith(local) and c.name == local:
                yield c

    def __repr__(self) -> str:
        return f"<Node {self.qname!r} {self.attrs!r} children={len(self.children)}>"


class StreamReader:
    """Feed bytes, get ``on_header(attrs)``, ``on_node(node)`` per stanza and ``on_end()``.

    ``reset()`` starts a new document (after STARTTLS and SASL success); it takes
    effect when the current ``feed`` returns, because expat cannot be replaced while
    it is running.
    """

    def __init__(self, on_header: Callable[[dict[str, str]], None], on_node: Callable[[Node], None],
                 on_end: Callable[[], None], max_stanza_bytes: int = 1 << 20) -> None:
        self._on_header = on_header
        self._on_node = on_node
        self._on_end = on_end
        self.max_stanza_bytes = max_stanza_bytes
        self._pending_reset = False
        self._feeding = False
        self._new_parser()

    def _new_parser(self) -> None:
        p = expat.ParserCreate("UTF-8", " ")
        p.buffer_text = True
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._text
        self._parser = p
        self._stack: list[Node] = []
        self._depth = 0
        self._since_stanza = 0

    def reset(self) -> None:
        """Begin a new XML document (the stream restarts)."""
        if self._feeding:
            self._pending_reset = True
        else:
            self._new_parser()

    def feed(self, data: bytes) -> None:
        """Parse ``data``; raises ``StreamClosed`` on bad XML or an oversized stanza."""
        self._feeding = True
        try:
            self._parser.Parse(data, False)
        except expat.ExpatError as e:
            raise StreamClosed(f"not-well-formed: {e}") from None
        finally:
            self._feeding = False
        if self._pending_reset:
            self._pending_reset = False
            self._new_parser()
            return
        if self._stack:
            self._since_stanza += len(data)
            if self._since_stanza > self.max_stanza_bytes:
                raise StreamClosed("stanza too large")

    def _start(self, qname: str, attrs: dict[str, str]) -> None:
        depth = self._depth
        self._depth = depth + 1
        if depth == 0:
            self._on_header(attrs)
            return
        node = Node(qname, attrs)
        if depth > 1:
            self._stack[-1].children.append(node)
        self._stack.append(node)

    def _end(self, qname: str) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._on_end()
            return
        node = self._stack.pop()
        if not self._stack:
            self._since_stanza = 0
            self._on_node(node)

    def _text(self, data: str) -> None:
        if self._stack:
            node = self._stack[-1]
            node.text = node.text + data if node.text else data
