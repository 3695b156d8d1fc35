"""The authentication service c2s talks to: per-domain authenticators plus policy.

Policy applied here, not in authenticators: PLAIN is not offered on an
unencrypted stream unless ``allow_plain_without_tls`` (labs and benchmarks only).
"""

from __future__ import annotations

from typing import Mapping

from zope.interface import implementer

from tigasepy.interfaces import (
    IAuthenticationService,
    IAuthenticator,
    ISaslExchange,
    SaslContext,
    SaslFailure,
)
from tigasepy.log_level import Logger

#: Mechanisms that reveal the password to anyone reading the stream.
CLEARTEXT_MECHANISMS = frozenset({"PLAIN"})


@implementer(IAuthenticationService)
class AuthenticationService:
    """``IAuthenticationService`` over one ``IAuthenticator`` per hosted domain."""

    _log = Logger()

    def __init__(self, authenticators: Mapping[str, IAuthenticator], allow_plain_without_tls: bool = False) -> None:
        """
        Args:
            authenticators: the authenticator of each hosted domain.
            allow_plain_without_tls: offer cleartext mechanisms on unencrypted streams.
        """
        self._authenticators = dict(authenticators)
        self._allow_plain_without_tls = allow_plain_without_tls

    def set_authenticator(self, domain: str, authenticator: IAuthenticator) -> None:
        """Authenticate ``domain``'s accounts with ``authenticator`` (a virtual host added at run time)."""
        self._authenticators[domain] = authenticator

    def remove_authenticator(self, domain: str) -> None:
        """Stop authenticating for ``domain`` (a virtual host removed at run time)."""
        self._authenticators.pop(domain, None)

    def mechanisms(self, context: SaslContext) -> list[str]:
        """See ``IAuthenticationService.mechanisms``; none for a domain not hosted here."""
        authenticator = self._authenticators.get(context.domain)
        if authenticator is None:
            return []
        offered = list(authenticator.mechanisms(context))
        if not context.secure and not self._allow_plain_without_tls:
            offered = [m for m in offered if m not in CLEARTEXT_MECHANISMS]
        return offered

    def start(self, mechanism: str, context: SaslContext) -> ISaslExchange:
        """See ``IAuthenticationService.start``.

        Raises:
            SaslFailure: ``invalid-mechanism`` when ``mechanism`` is not offered on ``context``.
        """
        if mechanism not in self.mechanisms(context):
            self._log.info("refused SASL mechanism {mechanism!r} on {domain} from {peer}",
                           mechanism=mechanism, domain=context.domain, peer=context.peer)
            raise SaslFailure("invalid-mechanism")
        return self._authenticators[context.domain].start(mechanism, context)
