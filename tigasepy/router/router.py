"""The router: a domain -> destination table with a default route (federation, later s2s)."""

from __future__ import annotations

from typing import Any

from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.interfaces import IComponent, IRouter
from tigasepy.log_level import Logger
from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.jid import domain_of


@implementer(IRouter)
class Router:
    """Delivers stanzas to the destination registered for their ``to`` domain.

    Local domains route to the session manager, component domains to their
    component; anything else goes to ``default`` (s2s), and without one the stanza
    bounces with ``remote-server-not-found`` (RFC 6120 8.3.3.14).
    """

    _log = Logger()

    def __init__(self, default: IComponent | None = None) -> None:
        self._routes: dict[str, IComponent] = {}
        self.default = default

    def add_route(self, domain: str, destination: IComponent) -> None:
        """Send stanzas for ``domain`` to ``destination``."""
        self._routes[domain.lower()] = destination

    def remove_route(self, domain: str) -> None:
        """Stop routing ``domain``."""
        self._routes.pop(domain.lower(), None)

    def serves(self, domain: str) -> bool:
        """True when ``domain`` has a route of its own (a hosted domain or a component)."""
        return domain.lower() in self._routes

    def domains(self) -> list[str]:
        """Every domain with a route of its own (hosted domains and components), sorted."""
        return sorted(self._routes)

    def destination(self, domain: str) -> IComponent | None:
        """The destination for ``domain`` (the default route when none is registered)."""
        return self._routes.get(domain, self.default)

    def route(self, stanza: domish.Element) -> None:
        """Deliver ``stanza`` to the owner of its ``to`` domain, or bounce it."""
        to = stanza.getAttribute("to")
        if not to:
            self._log.debug("dropping a {kind} without a destination", kind=stanza.name)
            return
        destination = self.destination(domain_of(to).lower())
        if destination is not None:
            destination.receive(stanza)
            return
        self.bounce(stanza, "remote-server-not-found")

    def bounce(self, stanza: domish.Element, condition: str) -> None:
        """Answer ``stanza`` with a stanza error, unless it must not be answered."""
        kind = stanza.getAttribute("type")
        if kind in ("error", "result") or not stanza.getAttribute("from"):
            return
        if stanza.name == "presence" and kind not in (None, "subscribe"):
            return
        reply = StanzaError(condition).to_response(stanza)
        back = self._routes.get(domain_of(reply["to"]).lower())
        if back is not None:
            back.receive(reply)


@implementer(IComponent)
class LocalDelivery:
    """The router's destination for a hosted domain: hands stanzas to the session manager."""

    def __init__(self, domain: str, sm: Any) -> None:
        self.domain = domain
        self._sm = sm

    def receive(self, stanza: domish.Element) -> None:
        """Deliver to the session manager."""
        self._sm.deliver(stanza)
