"""Private XML Storage (XEP-0049): ``jabber:iq:private``.

A user stores XML fragments on the server, one per namespace, and gets them back
by namespace. Only its own: a get or set addressed to another JID is
``forbidden``. A query without a child element is ``bad-request``; a get naming
more than one namespace is ``bad-request``; a fragment in a reserved namespace
(``jabber:*``, ``vcard-temp``) is ``not-acceptable``. Limits: a namespace's
fragment may take ``max_item_bytes`` serialized (else ``not-acceptable``), an
account at most ``max_namespaces`` namespaces (else ``policy-violation``). A set
that breaks a rule changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.config import ConfigError
from tigasepy.interfaces import IExtension, Protocol
from tigasepy.log_level import Logger
from tigasepy.sm.events import AccountEvent, AccountRemoved, HookPoint, StanzaEvent, Target
from tigasepy.sm.host import ExtensionHost
from tigasepy.storage.interfaces import IPrivateStore
from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.serialize import to_xml
from tigasepy.xmpp.stanza import element_children

PRIVATE = "jabber:iq:private"
RESERVED_PREFIXES = ("jabber:",)
RESERVED = frozenset({"vcard-temp"})

#: Handlers learn what a set stored (a ``PrivateData``), inside the account's serialized job and
#: before the reply (so they must not wait on ``serialized`` for the same account); PEP keeps
#: bookmarks in sync with it.
PrivateStored = HookPoint("private/stored", "private XML was stored for an account")


@dataclass(frozen=True)
class PrivateData:
    """What one private storage set wrote: ``owner`` and namespace -> serialized XML."""

    owner: str
    items: dict[str, str]


@dataclass(frozen=True)
class PrivateConfig:
    """``[extensions.private]``: how much an account may store."""

    max_item_bytes: int = 65536
    max_namespaces: int = 100

    def validate(self, path: tuple[str, ...]) -> None:
        """The limits must be at least 1."""
        for name in ("max_item_bytes", "max_namespaces"):
            if getattr(self, name) < 1:
                raise ConfigError("must be >= 1", path + (name,))


def reserved(namespace: str) -> bool:
    """True for a namespace XEP-0049 reserves (``jabber:*``, ``vcard-temp``)."""
    return namespace in RESERVED or namespace.startswith(RESERVED_PREFIXES)


def _by_namespace(query: domish.Element) -> dict[str, list[domish.Element]]:
    """The query's child elements grouped by namespace, in document order.

    Raises:
        StanzaError: no child (``bad-request``) or a reserved namespace (``not-acceptable``).
    """
    groups: dict[str, list[domish.Element]] = {}
    for child in element_children(query):
        namespace = child.uri or ""
        if not namespace or reserved(namespace):
            raise StanzaError("not-acceptable", f"The namespace {namespace!r} is reserved")
        groups.setdefault(namespace, []).append(child)
    if not groups:
        raise StanzaError("bad-request", "The query needs a child element in its own namespace")
    return groups


@implementer(IExtension)
class PrivateStorage:
    """Answers ``jabber:iq:private`` for the user's own account."""

    name = "private"
    protocols = (Protocol("XEP-0049", "1.2", "complete", "jabber:* and vcard-temp are refused"),)
    config_type = PrivateConfig
    _log = Logger()

    def __init__(self, config: PrivateConfig | None, host: ExtensionHost) -> None:
        self._config = config or PrivateConfig()
        self._host = host
        self._store = host.store(IPrivateStore)
        host.on_iq(PRIVATE, "query", self._query, types=("get", "set"),
                   targets=(Target.SELF, Target.BARE, Target.FULL))
        host.hook(AccountRemoved, self._forget)

    def _query(self, event: StanzaEvent) -> Any:
        owner = event.sender.userhost() if event.sender is not None else None
        if owner is None or (event.to is not None and event.to.userhost() != owner):
            raise StanzaError("forbidden", "Private storage is for your own account only")
        query = event.stanza.firstChildElement()
        groups = _by_namespace(query)
        if event.stanza["type"] == "get":
            if len(groups) != 1:
                raise StanzaError("bad-request", "Ask for one namespace at a time")
            [(namespace, elements)] = groups.items()
            return self._get(owner, namespace, elements[0])
        items = {namespace: "".join(to_xml(e) for e in elements) for namespace, elements in groups.items()}
        for namespace, xml in items.items():
            if len(xml.encode("utf-8")) > self._config.max_item_bytes:
                raise StanzaError("not-acceptable",
                                  f"The data for {namespace} is larger than {self._config.max_item_bytes} bytes")
        return self._host.serialized(owner, self._set, owner, items)

    async def _get(self, owner: str, namespace: str, asked: domish.Element) -> domish.Element:
        stored = await self._store.get(owner, namespace)
        if stored is not None:
            try:
                return parse_stanza(f"<query xmlns='{PRIVATE}'>{stored}</query>")
            except Exception:
                self._log.warn("stored private data of {owner} in {namespace} cannot be parsed",
                               owner=owner, namespace=namespace)
        reply = domish.Element((PRIVATE, "query"))
        reply.addElement((namespace, asked.name))
        return reply

    async def _set(self, owner: str, items: dict[str, str]) -> None:
        known = set(await self._store.namespaces(owner))
        if len(known | set(items)) > self._config.max_namespaces:
            raise StanzaError("policy-violation",
                              f"At most {self._config.max_namespaces} namespaces can be stored")
        await self._store.set(owner, items)
        try:
            await defer.maybeDeferred(self._host.run_hooks, PrivateStored, PrivateData(owner, items))
        except Exception:
            self._log.failure("a private storage observer failed for {owner}", owner=owner)
        return None

    async def _forget(self, event: AccountEvent) -> None:
        await self._store.remove_owner(event.jid)
