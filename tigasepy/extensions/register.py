"""In-band registration (XEP-0077): account creation, password change and removal.

Off by default (``[extensions.register] enabled = true`` turns it on, for every
host; ``[hosts."DOMAIN"] registration`` overrides it for one virtual host). Before
authentication it creates accounts; an authenticated user can change the
password or remove the account, which deletes its data in every store (through
the ``AccountRemoved`` hook) and ends its sessions.

A host whose authenticator chain names ``ldap`` never registers accounts nor
changes passwords in-band (``not-allowed``): the directory owns its user names, so
someone registering a directory user's name before that user's first login would
take over the account's data, and an internal password beside the directory's
would outlive a password change or a removal in the directory.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.auth.accounts import AccountManager, DomainNotHosted, InvalidAccountJID, InvalidPassword
from tigasepy.admin.commands import ServerAdmin
from tigasepy.auth.plain import in_thread_pool, run_inline
from tigasepy.config import ConfigError
from tigasepy.interfaces import IExtension, Protocol
from tigasepy.log_level import Logger
from tigasepy.sm.events import HANDLED, StanzaEvent, Target
from tigasepy.sm.host import ExtensionHost
from tigasepy.storage.interfaces import AccountExists, IAccountStore, NoSuchAccount
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.stanza import iq_result


@dataclass(frozen=True)
class RegisterConfig:
    """``[extensions.register]``: what users may do in-band."""

    allow_password_change: bool = True
    allow_removal: bool = True
    max_registrations_per_minute: int = 10
    instructions: str = "Choose a username and password to register with this server."

    def validate(self, path: tuple[str, ...]) -> None:
        """Check the limits."""
        if self.max_registrations_per_minute < 1:
            raise ConfigError("must be >= 1", path + ("max_registrations_per_minute",))


def _field(query: domish.Element, name: str) -> str | None:
    element = next(query.elements(ns.REGISTER, name), None)
    return None if element is None else str(element)


@implementer(IExtension)
class InBandRegistration:
    """XEP-0077 for unauthenticated streams (create) and for users (change password, remove)."""

    name = "register"
    protocols = (Protocol("XEP-0077", "2.4", "complete"),)
    config_type = RegisterConfig
    _log = Logger()

    def __init__(self, config: RegisterConfig | None, host: ExtensionHost) -> None:
        self._config = config or RegisterConfig()
        self._host = host
        auth = host.server_config.auth if host.server_config is not None else None
        self._accounts = AccountManager(
            host.store(IAccountStore),
            hashes=auth.scram_hashes if auth else ("SHA-1", "SHA-256"),
            iterations=auth.scram_iterations if auth else 10000,
            domains=host.domains,
            run_blocking=in_thread_pool(host.clock) if hasattr(host.clock, "getThreadPool") else run_inline,
        )
        self._recent: collections.deque[float] = collections.deque()
        host.add_feature(ns.REGISTER)
        host.add_stream_feature(self._stream_feature)
        host.on_unauthenticated_iq(ns.REGISTER, "query", self._unauthenticated)
        host.on_iq(ns.REGISTER, "query", self._authenticated, types=("get", "set"),
                   targets=(Target.SELF, Target.HOST))

    def _policy(self, domain: str) -> bool | str:
        """Whether ``domain`` registers accounts: True, False, or ``"ldap"`` (never: the
        directory owns the names). Read from the config in force at each use, so that a
        configuration reload applies at once."""
        server = self._host.server_config
        if server is None:
            return domain in self._host.domains
        if domain not in self._host.domains:
            return False
        if "ldap" in server.auth.chain_of(domain):
            return "ldap"
        # Loaded for every host; [extensions.register] enabled is the default of each.
        default = bool(server.extensions.get("register", {}).get("enabled", False))
        return server.registration_on(domain, default)

    def _check_host(self, domain: str) -> None:
        """Refuse registration where the host's policy says no."""
        policy = self._policy(domain)
        if policy == "ldap":
            raise StanzaError("not-allowed", "Accounts on this host come from the directory")
        if not policy:
            raise StanzaError("service-unavailable")

    def _stream_feature(self, domain: str, authenticated: bool) -> domish.Element | None:
        if authenticated or self._policy(domain) is not True:
            return None
        return domish.Element((ns.REGISTER_FEATURE, "register"))

    def _form(self) -> domish.Element:
        query = domish.Element((ns.REGISTER, "query"))
        query.addElement("instructions", content=self._config.instructions)
        query.addElement("username")
        query.addElement("password")
        return query

    def _unauthenticated(self, domain: str, stanza: domish.Element) -> Any:
        query = stanza.firstChildElement()
        self._check_host(domain)
        if stanza["type"] == "get":
            return self._form()
        if next(query.elements(ns.REGISTER, "remove"), None) is not None:
            raise StanzaError("not-authorized")
        username, password = _field(query, "username"), _field(query, "password")
        if not username or not password:
            raise StanzaError("not-acceptable", "username and password are required")
        self._throttle()
        d = self._accounts.register(f"{username}@{domain}", password)
        d.addCallbacks(lambda _: None, self._map_error)
        return d

    def _throttle(self) -> None:
        now = self._host.clock.seconds()
        while self._recent and self._recent[0] < now - 60:
            self._recent.popleft()
        if len(self._recent) >= self._config.max_registrations_per_minute:
            raise StanzaError("resource-constraint", "Too many registrations; try again later")
        self._recent.append(now)

    def _map_error(self, failure: Any) -> None:
        if failure.check(AccountExists):
            raise StanzaError("conflict", "That username is taken")
        if failure.check(InvalidAccountJID, DomainNotHosted):
            raise StanzaError("jid-malformed", "That username is not valid")
        if failure.check(InvalidPassword):
            raise StanzaError("not-acceptable", "That password is not acceptable")
        if failure.check(NoSuchAccount):
            raise StanzaError("item-not-found")
        return failure

    def _authenticated(self, event: StanzaEvent) -> Any:
        bare = event.sender.userhost()
        query = event.stanza.firstChildElement()
        if event.stanza["type"] == "get":
            reply = domish.Element((ns.REGISTER, "query"))
            reply.addElement("registered")
            reply.addElement("username", content=event.sender.user)
            return reply
        if next(query.elements(ns.REGISTER, "remove"), None) is not None:
            if not self._config.allow_removal:
                raise StanzaError("not-allowed")
            return self._remove(event, bare)
        username, password = _field(query, "username"), _field(query, "password")
        if not password or (username is not None and username != event.sender.user):
            raise StanzaError("bad-request" if not password else "not-allowed")
        if not self._config.allow_password_change or self._policy(event.sender.host) == "ldap":
            raise StanzaError("not-allowed")
        d = self._accounts.set_password(bare, password)
        d.addCallbacks(lambda _: None, self._map_error)
        return d

    def _remove(self, event: StanzaEvent, bare: str) -> Any:
        def answer() -> None:
            # The reply must reach the client before its stream ends.
            if event.session is not None:
                event.session.send(iq_result(event.stanza))

        d = ServerAdmin(self._accounts, self._host).delete_user(bare, before_close=answer)
        d.addCallbacks(lambda _: HANDLED, self._map_error)
        return d
