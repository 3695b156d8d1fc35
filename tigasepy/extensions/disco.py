"""Service discovery (XEP-0030), answered from what the enabled extensions declared."""

from __future__ import annotations

from typing import Any

from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.interfaces import IExtension, Protocol
from tigasepy.sm.dispatch import as_deferred
from tigasepy.sm.events import StanzaEvent, Target
from tigasepy.sm.host import ExtensionHost
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import StanzaError


def _domain(event: StanzaEvent) -> str | None:
    """The hosted domain asked about (virtual hosts may differ in what they serve)."""
    jid = event.to if event.to is not None else event.sender
    return jid.host if jid is not None else None


@implementer(IExtension)
class ServiceDiscovery:
    """``disco#info`` and ``disco#items`` for the server and for accounts."""

    name = "disco"
    protocols = (Protocol("XEP-0030", "2.5.0", "complete"),
                 Protocol("XEP-0128", "1.0.1", "complete", "forms declared by extensions"))
    config_type = None

    def __init__(self, config: None, host: ExtensionHost) -> None:
        self._host = host
        self._registry = host.disco
        host.add_identity("server", "im", "tigasepy")
        host.add_feature(ns.DISCO_INFO)
        host.add_feature(ns.DISCO_ITEMS)
        host.add_identity("account", "registered", target=Target.BARE)
        host.add_feature(ns.DISCO_INFO, target=Target.BARE)
        host.on_iq(ns.DISCO_INFO, "query", self._info, targets=(Target.HOST, Target.SELF, Target.BARE))
        host.on_iq(ns.DISCO_ITEMS, "query", self._items, targets=(Target.HOST, Target.SELF, Target.BARE))

    def _info(self, event: StanzaEvent) -> Any:
        query = event.stanza.firstChildElement()
        target = Target.HOST if event.target is Target.HOST else Target.BARE
        if query.getAttribute("node"):
            return self._node(event, query["node"], "info", target)
        if target is Target.BARE:
            return self._account_info(event)
        return self._build_info(target, _domain(event))

    def _account_info(self, event: StanzaEvent) -> Any:
        bare = event.to.userhost() if event.to is not None else event.sender.userhost()

        def _answer(exists: bool) -> domish.Element:
            if not exists:
                raise StanzaError("service-unavailable")
            return self._build_info(Target.BARE, bare.rpartition("@")[2])

        return self._host.account_exists(bare).addCallback(_answer)

    def _build_info(self, target: Target, domain: str | None) -> domish.Element:
        return self._registry.info(target, domain)

    def _items(self, event: StanzaEvent) -> Any:
        query = event.stanza.firstChildElement()
        if query.getAttribute("node"):
            target = Target.HOST if event.target is Target.HOST else Target.BARE
            return self._node(event, query["node"], "items", target)
        result = domish.Element((ns.DISCO_ITEMS, "query"))
        if event.target is Target.HOST:
            domain = _domain(event)
            for component in self._host.component_domains(domain) if domain else ():
                result.addElement("item")["jid"] = component     # e.g. the MUC service
        return result

    def _node(self, event: StanzaEvent, node: str, kind: str, target: Target) -> Any:
        """Answer a query on ``node`` with the handler an extension registered for it."""
        handler = self._registry.node_handler(node, kind, target)
        if handler is None:
            raise StanzaError("item-not-found")

        def stamp(result: domish.Element) -> domish.Element:
            result["node"] = node
            return result

        result = handler(event)
        d = as_deferred(result)
        return d.addCallback(stamp) if d is not None else stamp(result)
