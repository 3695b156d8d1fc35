"""The base for in-process components: receive stanzas for a domain, send through the router."""

from __future__ import annotations

from typing import Any

from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.interfaces import IComponent, IRouter
from tigasepy.log_level import Logger
from tigasepy.sm.dispatch import error_reply_for
from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.stanza import iq_result


@implementer(IComponent)
class Component:
    """A component answering for ``domain``.

    Subclasses override ``on_message``, ``on_presence`` and ``on_iq`` (which returns
    the result payload, None, or raises ``StanzaError``). An IQ nobody answers gets
    ``service-unavailable``; exceptions become ``internal-server-error`` and are logged.

    Args:
        domain: the component's domain (``echo.example.org``).
        config: its parsed ``[components.NAME]`` options (``config_type``), or None.
    """

    config_type: Any = None
    _log = Logger()

    def __init__(self, domain: str, config: Any = None) -> None:
        self.domain = domain
        self.config = config
        self.router: IRouter | None = None

    def attach(self, router: IRouter) -> None:
        """Start receiving stanzas for ``domain`` from ``router``."""
        self.router = router
        router.add_route(self.domain, self)

    def detach(self) -> None:
        """Stop receiving stanzas."""
        if self.router is not None:
            self.router.remove_route(self.domain)
            self.router = None

    def send(self, stanza: domish.Element) -> None:
        """Send ``stanza`` from this component; ``from`` defaults to the component's domain."""
        if not stanza.getAttribute("from"):
            stanza["from"] = self.domain
        if self.router is not None:
            self.router.route(stanza)

    def receive(self, stanza: domish.Element) -> None:
        """Dispatch a routed stanza to the ``on_*`` methods; no exception escapes."""
        try:
            if stanza.name == "message":
                self.on_message(stanza)
            elif stanza.name == "presence":
                self.on_presence(stanza)
            elif stanza.name == "iq":
                self._iq(stanza)
        except Exception as e:
            reply = error_reply_for(stanza, e)
            if reply is not None:
                self.send(reply)

    def _iq(self, stanza: domish.Element) -> None:
        if stanza.getAttribute("type") not in ("get", "set"):
            return
        payload = self.on_iq(stanza)
        self.send(iq_result(stanza, payload))

    def on_message(self, stanza: domish.Element) -> None:
        """A message for the component (default: ignored)."""

    def on_presence(self, stanza: domish.Element) -> None:
        """A presence for the component (default: ignored)."""

    def on_iq(self, stanza: domish.Element) -> domish.Element | None:
        """A get or set IQ; return the result payload or raise ``StanzaError``."""
        raise StanzaError("service-unavailable")
