"""Drive the session manager without sockets: fake client sessions that record what they get."""

from __future__ import annotations

from typing import Any, Iterable

from twisted.internet.task import Clock
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.interfaces import IClientSession, IComponent
from tigasepy.sm.manager import SessionManager
from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp.errors import error_condition


def parse_xml(text: str) -> domish.Element:
    """Parse one stanza written as client XML into a namespace-neutral element."""
    return parse_stanza(text)


@implementer(IClientSession)
class FakeClientSession:
    """A bound client stream that records the stanzas the SM writes to it."""

    def __init__(self) -> None:
        self.jid: Any = None
        self.secure = True
        self.sent: list[domish.Element] = []
        self.closed: tuple[str, str | None] | None = None

    def send(self, stanza: domish.Element) -> None:
        self.sent.append(stanza)

    def close(self, condition: str, text: str | None = None) -> None:
        self.closed = (condition, text)

    def take(self) -> list[domish.Element]:
        """Return and forget what was sent so far."""
        out, self.sent = self.sent, []
        return out


@implementer(IComponent)
class RecordingRouter:
    """A router that records what the SM sends to non-local domains."""

    domain = "*"

    def __init__(self) -> None:
        self.routed: list[domish.Element] = []
        self.local: SessionManager | None = None

    def route(self, stanza: domish.Element) -> None:
        to = stanza.getAttribute("to", "")
        domain = to.split("/", 1)[0].rpartition("@")[2]
        if self.local is not None and self.local.is_local_domain(domain):
            self.local.deliver(stanza)
        else:
            self.routed.append(stanza)

    def add_route(self, domain: str, destination: Any) -> None:
        pass

    def remove_route(self, domain: str) -> None:
        pass

    def receive(self, stanza: domish.Element) -> None:
        self.route(stanza)


class Stores:
    """A minimal store registry over given store objects."""

    def __init__(self, stores: dict[Any, Any]) -> None:
        self._stores = stores

    def get(self, interface: Any) -> Any:
        return self._stores[interface]


class SMHarness:
    """A SessionManager with chosen extensions, memory stores and fake sessions."""

    def __init__(self, extensions: Iterable[tuple[type, Any]], stores: dict[Any, Any],
                 domains: tuple[str, ...] = ("example.org",)) -> None:
        self.clock = Clock()
        self.router = RecordingRouter()
        self.sm = SessionManager(domains, Stores(stores), self.router, self.clock)
        self.router.local = self.sm
        for cls, config in extensions:
            self.sm.load_extension(cls, config)

    def connect(self, full_jid: str) -> FakeClientSession:
        """Bind a fake session for ``user@domain/resource``."""
        user_host, _, resource = full_jid.partition("/")
        user, _, domain = user_host.partition("@")
        session = FakeClientSession()
        session.jid = self.sm.bind(session, user, domain, resource or None)
        return session

    def send(self, session: FakeClientSession, xml: str | domish.Element) -> None:
        """Have ``session``'s client send ``xml`` (``from`` gets stamped, as c2s does)."""
        stanza = parse_xml(xml) if isinstance(xml, str) else xml
        stanza["from"] = session.jid.full()
        self.sm.receive(session, stanza)

    def disconnect(self, session: FakeClientSession) -> None:
        """End ``session``'s stream."""
        self.sm.unbind(session)


def condition(stanza: domish.Element) -> str | None:
    """The error condition of ``stanza`` (shortcut for tests)."""
    return error_condition(stanza)
