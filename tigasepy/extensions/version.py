"""Software Version (XEP-0092) of the server."""

from __future__ import annotations

import platform
from dataclasses import dataclass

from twisted.words.xish import domish
from zope.interface import implementer

import tigasepy
from tigasepy.interfaces import IExtension, Protocol
from tigasepy.sm.events import StanzaEvent
from tigasepy.sm.host import ExtensionHost
from tigasepy.xmpp import namespaces as ns


@dataclass(frozen=True)
class VersionConfig:
    """``[extensions.version]``: what the server tells about itself."""

    name: str = "tigasepy"
    show_os: bool = False


@implementer(IExtension)
class SoftwareVersion:
    """Answers ``jabber:iq:version`` for the server; the reply is built once."""

    name = "version"
    protocols = (Protocol("XEP-0092", "1.1", "complete"),)
    config_type = VersionConfig

    def __init__(self, config: VersionConfig | None, host: ExtensionHost) -> None:
        config = config or VersionConfig()
        self._reply = domish.Element((ns.VERSION, "query"))
        self._reply.addElement("name", content=config.name)
        self._reply.addElement("version", content=tigasepy.__version__)
        if config.show_os:
            self._reply.addElement("os", content=f"{platform.system()} {platform.release()}")
        host.add_feature(ns.VERSION)
        host.on_iq(ns.VERSION, "query", self._version)

    def _version(self, event: StanzaEvent) -> domish.Element:
        return self._reply
