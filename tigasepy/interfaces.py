"""The plugin seams of tigasepy (zope.interface).

Connection managers (c2s, later s2s, BOSH, WebSocket) and the session manager
meet only here: the SM sees an ``IClientSession`` handle, c2s sees an
``ISessionManager`` and an ``IAuthenticationService``.  Everything that crosses
is an address, a stanza or a small value object, so the two sides can later run
in different processes over the link.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zope.interface import Attribute, Interface


# --- SASL value objects -------------------------------------------------------------------

@dataclass(frozen=True)
class ChannelBinding:
    """TLS channel-binding data a SASL -PLUS mechanism can check (RFC 5929, RFC 9266).

    ``data`` maps a binding type (``"tls-exporter"``, ``"tls-server-end-point"``,
    ``"tls-unique"``) to the bytes the client must have seen.
    """

    data: dict[str, bytes] = field(default_factory=dict)

    @property
    def types(self) -> frozenset[str]:
        """The binding types available on this connection."""
        return frozenset(self.data)


@dataclass(frozen=True)
class SaslContext:
    """What an authenticator may know about the connection asking to authenticate."""

    domain: str
    secure: bool
    channel_binding: ChannelBinding | None = None
    peer: str = ""


@dataclass(frozen=True)
class SaslChallenge:
    """The exchange needs another round: send ``data`` in a ``<challenge/>``."""

    data: bytes


@dataclass(frozen=True)
class SaslSuccess:
    """Authenticated as ``username`` (the localpart); ``data`` goes into ``<success/>``."""

    username: str
    data: bytes | None = None


class SaslFailure(Exception):
    """The exchange failed; ``condition`` is the RFC 6120 6.5 SASL failure condition."""

    def __init__(self, condition: str = "not-authorized", text: str | None = None) -> None:
        super().__init__(condition, text)
        self.condition = condition
        self.text = text


class ISaslExchange(Interface):
    """One server-side SASL exchange for one connection."""

    def step(response: bytes | None) -> Any:
        """Process the client's data (the initial response first, then each response).

        Returns a Deferred firing with ``SaslChallenge`` or ``SaslSuccess``; fails with
        ``SaslFailure``.
        """


class IAuthenticator(Interface):
    """Checks credentials for accounts of the hosts it serves.

    An authenticator offers only the mechanisms it can support: the internal one
    stores salted SCRAM keys (SCRAM-*, PLAIN checked against them); an LDAP one can
    only do PLAIN.
    """

    def mechanisms(context: SaslContext) -> list[str]:
        """SASL mechanism names this authenticator can run on ``context``, best first."""

    def start(mechanism: str, context: SaslContext) -> ISaslExchange:
        """Begin an exchange with ``mechanism`` (one returned by ``mechanisms``)."""


class IAuthenticationService(Interface):
    """What a connection manager asks to authenticate a client (relayable over the link)."""

    def mechanisms(context: SaslContext) -> list[str]:
        """The mechanisms to advertise for ``context``, policy (e.g. PLAIN only over TLS) applied."""

    def start(mechanism: str, context: SaslContext) -> ISaslExchange:
        """Begin an exchange; raises ``SaslFailure("invalid-mechanism")`` for one not offered."""


# --- sessions -------------------------------------------------------------------------

class IClientSession(Interface):
    """The narrow handle the session manager holds for one bound client stream."""

    jid = Attribute("The full JID bound to this stream (a twisted JID).")
    secure = Attribute("True when the stream is encrypted.")

    def send(stanza: Any) -> None:
        """Write ``stanza`` (a ``domish.Element``) to the client."""

    def close(condition: str, text: str | None = None) -> None:
        """End the stream with an RFC 6120 stream error (e.g. ``conflict``)."""


class ISessionManager(Interface):
    """What a connection manager sees of the session manager."""

    def is_local_domain(domain: str) -> bool:
        """True when ``domain`` is one this server hosts users for."""

    def bind(session: IClientSession, username: str, domain: str, resource: str | None) -> Any:
        """Bind a resource for an authenticated stream.

        Returns the full JID (server-generated when ``resource`` is None or taken
        per policy). An older session with the same full JID is closed with a
        ``conflict`` stream error. Raises ``StanzaError`` (``not-allowed``,
        ``resource-constraint``) when binding is refused.
        """

    def unbind(session: IClientSession) -> None:
        """The stream of ``session`` has ended; broadcast unavailable and forget it."""

    def receive(session: IClientSession, stanza: Any) -> None:
        """A stanza from a bound client; ``from`` has already been stamped."""

    def replace_handle(old: IClientSession, new: IClientSession) -> bool:
        """The bound session of ``old`` goes on through ``new`` (stream resumption, XEP-0198).

        Nothing is broadcast; returns False when ``old`` holds no bound session.
        """

    def route(stanza: Any) -> None:
        """Send a stanza the connection manager produced on a session's behalf towards its ``to``
        (an IQ error for a request the session never acknowledged before it ended)."""

    def redeliver(stanza: Any) -> None:
        """Deliver again a message a session never acknowledged before it ended (XEP-0198):
        another resource or offline storage, by the RFC 6121 rules, marked as a re-delivery."""


# --- routing and components -----------------------------------------------------------

class IComponent(Interface):
    """Something addressable by its own domain that receives stanzas from the router."""

    domain = Attribute("The domain this component answers for.")

    def receive(stanza: Any) -> None:
        """Handle a stanza addressed to this component's domain (or a JID in it)."""


class IRouter(Interface):
    """Moves stanzas between parts by the domain of their ``to`` address."""

    def route(stanza: Any) -> None:
        """Deliver ``stanza`` to the destination that owns its ``to`` domain."""

    def add_route(domain: str, destination: IComponent) -> None:
        """Send stanzas for ``domain`` to ``destination``."""

    def remove_route(domain: str) -> None:
        """Stop routing ``domain``."""


# --- extensions -----------------------------------------------------------------------

@dataclass(frozen=True)
class Protocol:
    """A specification an extension implements, for disco and ``tigasepy.doap``."""

    spec: str          # "RFC 6121" or "XEP-0199"
    version: str       # the spec version implemented ("2.0")
    status: str = "complete"   # complete | partial
    note: str = ""


class IExtension(Interface):
    """A session-manager extension: one feature, registered through the ``ExtensionHost``.

    Implementations are constructed as ``cls(config, host)`` and register their
    handlers, features and stores on ``host`` in ``__init__``; the host records every
    registration so that disabling the extension undoes them all.
    """

    name = Attribute("Short unique name; also its config section ``[extensions.NAME]``.")
    protocols = Attribute("A tuple of ``Protocol`` this extension implements.")
    config_type = Attribute("The frozen dataclass of its config section, or None.")
