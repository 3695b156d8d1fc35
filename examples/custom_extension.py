"""An example session-manager extension: a welcome message on each account's first login of the day.

Enable it in ``tigasepy.toml``::

    [extensions.welcome]
    class = "examples.custom_extension:Welcome"
    text = "Welcome to our server!"

It shows the whole extension API surface a typical feature needs: a config
dataclass, a disco feature, a hook on a typed hook point, and an IQ handler.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.interfaces import IExtension, Protocol
from tigasepy.sm.events import InitialPresence, SessionEvent, StanzaEvent, Target
from tigasepy.sm.host import ExtensionHost

NS_WELCOME = "urn:example:welcome"


@dataclass(frozen=True)
class WelcomeConfig:
    """``[extensions.welcome]`` options."""

    text: str = "Welcome!"
    every_s: int = 86400


@implementer(IExtension)
class Welcome:
    """Sends ``text`` to a user when they come online (at most once per ``every_s``).

    Also answers ``<query xmlns='urn:example:welcome'/>`` with the text.
    """

    name = "welcome"
    protocols = (Protocol("urn:example:welcome", "1.0", "complete", "an example extension"),)
    config_type = WelcomeConfig

    def __init__(self, config: WelcomeConfig | None, host: ExtensionHost) -> None:
        self._config = config or WelcomeConfig()
        self._host = host
        self._last_sent: dict[str, float] = {}
        host.add_feature(NS_WELCOME)
        host.hook(InitialPresence, self._greet)
        host.on_iq(NS_WELCOME, "query", self._query, targets=(Target.HOST,))

    def _greet(self, event: SessionEvent) -> None:
        now = self._host.clock.seconds()
        bare = event.session.bare
        if now - self._last_sent.get(bare, float("-inf")) < self._config.every_s:
            return
        self._last_sent[bare] = now
        message = domish.Element((None, "message"))
        message["from"] = event.session.jid.host
        message["to"] = event.session.full
        message["type"] = "headline"
        message.addElement("body", content=self._config.text)
        event.session.send(message)

    def _query(self, event: StanzaEvent) -> domish.Element:
        query = domish.Element((NS_WELCOME, "query"))
        query.addElement("text", content=self._config.text)
        return query
