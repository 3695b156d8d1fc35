"""Contact Addresses for XMPP Services (XEP-0157), in the server's disco#info.

The addresses configured in ``[extensions.contact_addresses]`` go into an extended
information form (XEP-0128) with FORM_TYPE ``http://jabber.org/network/serverinfo``,
one ``<field var='KIND-addresses'/>`` per kind that has addresses. Each address is a
URI (``mailto:abuse@example.org``, ``xmpp:admin@example.org``,
``https://example.org/support``). Nothing is advertised when none is configured.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.compat import data_form
from tigasepy.config import ConfigError
from tigasepy.interfaces import IExtension, Protocol
from tigasepy.sm.host import ExtensionHost

SERVERINFO = "http://jabber.org/network/serverinfo"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")


@dataclass(frozen=True)
class ContactAddressesConfig:
    """``[extensions.contact_addresses]``: URIs per XEP-0157 kind (``admin = ["mailto:..."]``)."""

    abuse: tuple[str, ...] = ()
    admin: tuple[str, ...] = ()
    feedback: tuple[str, ...] = ()
    sales: tuple[str, ...] = ()
    security: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    support: tuple[str, ...] = ()

    def validate(self, path: tuple[str, ...]) -> None:
        """Every address must be a URI (``scheme:rest``)."""
        for f in fields(self):
            for address in getattr(self, f.name):
                if not _URI.match(address):
                    raise ConfigError(f"{address!r} is not a URI (e.g. mailto:... or xmpp:...)",
                                      path + (f.name,))

    def by_kind(self) -> dict[str, tuple[str, ...]]:
        """kind -> addresses, for the kinds that have some, in XEP-0157's order."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


def serverinfo_form(config: ContactAddressesConfig) -> domish.Element | None:
    """The XEP-0157 form for ``config``, or None when it names no address."""
    kinds = config.by_kind()
    if not kinds:
        return None
    form = data_form.Form("result", formNamespace=SERVERINFO, fields=[
        data_form.Field(None, var=f"{kind}-addresses", values=list(addresses))
        for kind, addresses in kinds.items()])
    return form.toElement()


@implementer(IExtension)
class ContactAddresses:
    """Adds the serverinfo form to the server's disco#info."""

    name = "contact_addresses"
    protocols = (Protocol("XEP-0157", "1.1.1", "complete"),)
    config_type = ContactAddressesConfig

    def __init__(self, config: ContactAddressesConfig | None, host: ExtensionHost) -> None:
        form = serverinfo_form(config or ContactAddressesConfig())
        if form is not None:
            host.add_disco_form(form)
