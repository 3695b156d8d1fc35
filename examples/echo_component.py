"""An example component: echoes every message back to its sender.

Enable it in ``tigasepy.toml``::

    [components.echo]
    class = "examples.echo_component:EchoComponent"
    domain = "echo.example.org"
    prefix = "echo: "

(The ``examples`` folder must be importable: run from the repository root, or
copy the module into your own package.)
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.words.xish import domish

from tigasepy.components.base import Component
from tigasepy.xmpp.errors import StanzaError


@dataclass(frozen=True)
class EchoConfig:
    """``[components.echo]`` options."""

    prefix: str = ""


class EchoComponent(Component):
    """Replies to each message with the same body (after ``prefix``); answers version queries."""

    config_type = EchoConfig

    def on_message(self, stanza: domish.Element) -> None:
        if stanza.getAttribute("type") == "error" or stanza.body is None:
            return
        reply = domish.Element((None, "message"))
        reply["to"] = stanza["from"]
        reply["from"] = stanza["to"]
        reply["type"] = stanza.getAttribute("type", "normal")
        prefix = self.config.prefix if self.config else ""
        reply.addElement("body", content=prefix + str(stanza.body))
        self.send(reply)

    def on_iq(self, stanza: domish.Element) -> domish.Element | None:
        payload = stanza.firstChildElement()
        if payload is not None and payload.uri == "jabber:iq:version" and stanza["type"] == "get":
            query = domish.Element(("jabber:iq:version", "query"))
            query.addElement("name", content="echo")
            query.addElement("version", content="1.0")
            return query
        raise StanzaError("service-unavailable")
