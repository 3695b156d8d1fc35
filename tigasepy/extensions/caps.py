"""Entity capabilities of the server (XEP-0115 section 6.3): caps in stream features.

Authenticated client streams get ``<c xmlns='http://jabber.org/protocol/caps'
hash node ver/>`` in their stream features, ``ver`` computed (XEP-0115 section 5)
from the server's disco#info: the identities, features and XEP-0128 forms the
loaded extensions declared. The disco registry tells this extension about every
change, so loading, unloading or reconfiguring an extension recomputes ``ver``; the
disco#info answer for ``node#ver`` (section 6.2) is the server's own, under the
current ``ver`` only (an older ``ver`` is ``item-not-found``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.config import ConfigError
from tigasepy.interfaces import IExtension, Protocol
from tigasepy.sm.events import StanzaEvent, Target
from tigasepy.sm.host import ExtensionHost
from tigasepy.xmpp.caps import CAPS, HASHES, caps_element, verification_string


@dataclass(frozen=True)
class CapsConfig:
    """``[extensions.caps]``: the caps node (a URI naming the software) and hash."""

    node: str = "https://tigasepy.invalid/caps"
    hash: str = "sha-1"

    def validate(self, path: tuple[str, ...]) -> None:
        """The node must be a non-empty string without ``#``; the hash one XEP-0115 knows."""
        if not self.node or "#" in self.node:
            raise ConfigError("must be a non-empty URI without '#'", path + ("node",))
        if self.hash not in HASHES:
            raise ConfigError(f"must be one of {', '.join(sorted(HASHES))}", path + ("hash",))


@implementer(IExtension)
class EntityCapabilities:
    """Announces the server's capabilities hash in stream features and answers its node."""

    name = "caps"
    protocols = (Protocol("XEP-0115", "1.6.0", "complete",
                          "the server's own caps in stream features (section 6.3) and disco#info on node#ver"),)
    config_type = CapsConfig

    def __init__(self, config: CapsConfig | None, host: ExtensionHost) -> None:
        self._config = config or CapsConfig()
        self._host = host
        self._registry = host.disco
        self._ver = ""
        self._node: str | None = None
        # Virtual hosts that serve different extensions advertise their own ver.
        self._host_vers: dict[str, str] = {}
        self._host_nodes: dict[str, str] = {}
        host.add_feature(CAPS)
        host.add_stream_feature(self._stream_feature)
        self._registry.watch(self._refresh)
        host.on_close(self._close)
        self._refresh()

    @property
    def ver(self) -> str:
        """The current verification string of the server's disco#info."""
        return self._ver

    def _verification(self, domain: str | None) -> str:
        registry = self._registry
        identities = [(i.category, i.type, "", i.name) for i in registry.identities(Target.HOST, domain)]
        return verification_string(identities, registry.features(Target.HOST, domain),
                                   registry.forms(Target.HOST, domain), self._config.hash)

    def _refresh(self) -> None:
        """Recompute ``ver`` and move the ``node#ver`` disco node to it; virtual hosts whose
        disco#info differs (extensions they do not serve) get a ver and node of their own."""
        registry = self._registry
        ver = self._verification(None)
        host_vers: dict[str, str] = {}
        if registry.varies_by_domain:
            for domain in self._host.domains:
                own = self._verification(domain)
                if own != ver:
                    host_vers[domain] = own
        if ver == self._ver and self._node is not None and host_vers == self._host_vers:
            return
        for node in {self._node, *self._host_nodes.values()} - {None}:
            registry.remove_node(node, Target.HOST)
        self._ver = ver
        self._node = f"{self._config.node}#{ver}"
        registry.add_node(self._node, info=self._info, target=Target.HOST)
        self._host_vers, self._host_nodes = host_vers, {}
        for domain, own in host_vers.items():
            node = f"{self._config.node}#{own}"
            if node not in self._host_nodes.values():
                registry.add_node(node, info=self._host_info, target=Target.HOST)
            self._host_nodes[domain] = node

    def _host_info(self, event: StanzaEvent) -> domish.Element:
        return self._registry.info(Target.HOST, event.to.host if event.to is not None else None)

    def _close(self) -> None:
        for node in set(self._host_nodes.values()):
            self._registry.remove_node(node, Target.HOST)
        self._host_nodes, self._host_vers = {}, {}
        self._registry.unwatch(self._refresh)
        if self._node is not None:
            self._registry.remove_node(self._node, Target.HOST)
            self._node = None

    def _info(self, event: StanzaEvent) -> domish.Element:
        return self._registry.info(Target.HOST)

    def _stream_feature(self, domain: str, authenticated: bool) -> Any:
        if not authenticated:
            return None
        return caps_element(self._config.node, self._host_vers.get(domain, self._ver), self._config.hash)
