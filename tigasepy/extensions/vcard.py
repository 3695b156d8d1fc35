"""vcard-temp (XEP-0054) and vCard-based avatars (XEP-0153).

A user gets its own vCard with an IQ get without ``to`` (or to its bare JID): an
empty ``<vCard/>`` when it stored none. Another account's vCard is fetched at that
account's bare JID; no vCard and no such account both give ``service-unavailable``
(XEP-0054 1.3, so that accounts cannot be harvested). A user sets only its own
vCard: a set to another JID (bare or full, its own full JID included) is
``forbidden`` and changes nothing; a vCard larger than ``max_size_bytes``
(serialized) is ``not-acceptable``.

XEP-0153: the SHA-1 of the PHOTO's BINVAL is kept with the vCard. When the vCard
has a photo, available presence a client sends without an
``<x xmlns='vcard-temp:x:update'/>`` carrying a ``<photo/>`` of its own gets one with
that hash (an update element without ``<photo/>`` is replaced, XEP-0398), so that
contacts learn the avatar even from clients that do not do XEP-0153 themselves.
The hashes of the accounts with sessions are cached in memory.

XEP-0398 (with the ``pep`` extension): a stored vCard is handed to ``VCardStored``
handlers (PEP publishes its photo to the avatar nodes), and an avatar published over
PEP arrives as an ``AvatarPhoto`` event that replaces the stored vCard's PHOTO (and
so the hash above).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.config import ConfigError
from tigasepy.interfaces import IExtension, Protocol
from tigasepy.log_level import Logger
from tigasepy.sm.events import (
    PASS, AccountEvent, AccountRemoved, HookPoint, PresenceFromClient, SessionEnded, SessionEvent, StanzaEvent,
    Target,
)
from tigasepy.sm.host import ExtensionHost
from tigasepy.storage.interfaces import IVCardStore, VCard
from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.serialize import to_xml

VCARD = "vcard-temp"
VCARD_UPDATE = "vcard-temp:x:update"

#: After a user stored its vCard (a ``VCardStored`` event); PEP converts its photo (XEP-0398).
VCardStored = HookPoint("vcard/stored", "an account stored its vCard")
#: An avatar published over PEP (an ``AvatarPhoto``) becomes the vCard's PHOTO (XEP-0398).
AvatarPhoto = HookPoint("vcard/avatar-photo", "an avatar was published over PEP")


@dataclass(frozen=True)
class VCardData:
    """The vCard ``owner`` stored (the parsed element)."""

    owner: str
    vcard: domish.Element


@dataclass(frozen=True)
class AvatarData:
    """An avatar for the vCard of ``owner``: the image and its MIME type; None removes the PHOTO."""

    owner: str
    data: bytes | None
    mime_type: str = ""

#: Runs before the presence extension (priority 0) so that the broadcast carries the hash.
PRESENCE_PRIORITY = 10
_UNKNOWN = object()


@dataclass(frozen=True)
class VCardConfig:
    """``[extensions.vcard]``: the size limit and the avatar hash in presence."""

    max_size_bytes: int = 131072
    avatar_hash_in_presence: bool = True

    def validate(self, path: tuple[str, ...]) -> None:
        """The limit must leave room for a vCard."""
        if self.max_size_bytes < 1024:
            raise ConfigError("must be >= 1024", path + ("max_size_bytes",))


def photo_hash(vcard: domish.Element) -> str | None:
    """The hex SHA-1 of the image in the vCard's ``PHOTO/BINVAL``, None without one.

    Raises:
        StanzaError: ``bad-request`` when the BINVAL is not base64.
    """
    for photo in vcard.elements(VCARD, "PHOTO"):
        for binval in photo.elements(VCARD, "BINVAL"):
            text = "".join(str(binval).split())
            if not text:
                return None
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise StanzaError("bad-request", "The PHOTO's BINVAL is not base64") from None
            return hashlib.sha1(data).hexdigest()
    return None


def _empty() -> domish.Element:
    return domish.Element((VCARD, "vCard"))


@implementer(IExtension)
class VCardTemp:
    """Stores and serves vCards; adds the avatar hash to presence."""

    name = "vcard"
    protocols = (
        Protocol("XEP-0054", "1.3.0", "complete"),
        Protocol("XEP-0153", "1.1.1", "complete",
                 "the server adds the photo hash to presence sent without an update element"),
    )
    config_type = VCardConfig
    _log = Logger()

    def __init__(self, config: VCardConfig | None, host: ExtensionHost) -> None:
        self._config = config or VCardConfig()
        self._host = host
        self._store = host.store(IVCardStore)
        self._hashes: dict[str, str | None] = {}
        self._waiting: dict[str, list[defer.Deferred]] = {}
        host.add_feature(VCARD)
        host.on_iq(VCARD, "vCard", self._get_own, types=("get",), targets=(Target.SELF,))
        host.on_iq(VCARD, "vCard", self._get_other, types=("get",), targets=(Target.BARE,))
        host.on_iq(VCARD, "vCard", self._set_own, types=("set",), targets=(Target.SELF,))
        host.on_iq(VCARD, "vCard", self._set_other, types=("set",), targets=(Target.BARE, Target.FULL))
        host.hook(AccountRemoved, self._forget)
        host.hook(AvatarPhoto, self._avatar_photo)
        if self._config.avatar_hash_in_presence:
            host.hook(PresenceFromClient, self._presence, priority=PRESENCE_PRIORITY)
            host.hook(SessionEnded, self._session_ended)

    # -- IQs ----------------------------------------------------------------------------
    async def _get_own(self, event: StanzaEvent) -> domish.Element:
        stored = await self._store.get(event.sender.userhost())
        return self._element(stored) if stored is not None else _empty()

    async def _get_other(self, event: StanzaEvent) -> domish.Element:
        stored = await self._store.get(event.to.userhost())
        if stored is None:
            raise StanzaError("service-unavailable")
        return self._element(stored)

    def _element(self, stored: VCard) -> domish.Element:
        try:
            return parse_stanza(stored.xml)
        except Exception:
            self._log.warn("a stored vCard cannot be parsed; answering with an empty one")
            return _empty()

    async def _set_own(self, event: StanzaEvent) -> None:
        owner = event.sender.userhost()
        vcard = event.stanza.firstChildElement()
        xml = to_xml(vcard)
        if len(xml.encode("utf-8")) > self._config.max_size_bytes:
            raise StanzaError("not-acceptable", f"The vCard is larger than {self._config.max_size_bytes} bytes")
        digest = photo_hash(vcard)
        await self._store.set(owner, VCard(xml=xml, photo_hash=digest))
        if owner in self._hashes:
            self._hashes[owner] = digest
        try:
            await defer.maybeDeferred(self._host.run_hooks, VCardStored, VCardData(owner, vcard))
        except Exception:
            self._log.failure("a vCard observer failed for {owner}", owner=owner)
        return None

    async def _avatar_photo(self, avatar: AvatarData) -> Any:
        """Put an avatar published over PEP into the stored vCard (XEP-0398 section 4.1)."""
        owner = avatar.owner
        stored = await self._store.get(owner)
        vcard = self._element(stored) if stored is not None else _empty()
        for photo in list(vcard.elements(VCARD, "PHOTO")):
            vcard.children.remove(photo)
        digest = None
        if avatar.data is not None:
            photo = vcard.addElement((VCARD, "PHOTO"))
            if avatar.mime_type:
                photo.addElement("TYPE", content=avatar.mime_type)
            photo.addElement("BINVAL", content=base64.b64encode(avatar.data).decode("ascii"))
            digest = hashlib.sha1(avatar.data).hexdigest()
        xml = to_xml(vcard)
        if len(xml.encode("utf-8")) > self._config.max_size_bytes:
            self._log.info("the avatar of {owner} does not fit its vCard", owner=owner)
            return PASS
        await self._store.set(owner, VCard(xml=xml, photo_hash=digest))
        if owner in self._hashes:
            self._hashes[owner] = digest
        return PASS

    def _set_other(self, event: StanzaEvent) -> None:
        raise StanzaError("forbidden", "You can only set your own vCard")

    async def _forget(self, event: AccountEvent) -> None:
        self._hashes.pop(event.jid, None)
        await self._store.remove_owner(event.jid)

    # -- XEP-0153 -----------------------------------------------------------------------
    def _presence(self, event: StanzaEvent) -> Any:
        session = event.session
        stanza = event.stanza
        if session is None or stanza.getAttribute("type") is not None:
            return PASS
        updates = list(stanza.elements(VCARD_UPDATE, "x"))
        if any(next(x.elements(VCARD_UPDATE, "photo"), None) is not None for x in updates):
            return PASS
        for update in updates:    # an update element without <photo/> is overwritten (XEP-0398 section 5)
            stanza.children.remove(update)
        owner = session.bare
        digest = self._hashes.get(owner, _UNKNOWN)
        if digest is _UNKNOWN:
            return self._load(owner).addCallback(lambda found: self._stamp(stanza, found))
        return self._stamp(stanza, digest)

    def _stamp(self, stanza: domish.Element, digest: Any) -> Any:
        if digest:
            update = stanza.addElement((VCARD_UPDATE, "x"))
            update.addElement("photo", content=digest)
        return PASS

    def _load(self, owner: str) -> defer.Deferred:
        """A Deferred of the owner's photo hash; concurrent loads share one read, in order."""
        waiter: defer.Deferred = defer.Deferred()
        waiters = self._waiting.get(owner)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        waiters = self._waiting[owner] = [waiter]

        def loaded(stored: VCard | None) -> None:
            digest = stored.photo_hash if stored is not None else None
            if self._host.sessions(owner):
                self._hashes[owner] = digest
            self._release(owner, digest)

        def failed(failure: Any) -> None:
            self._log.failure("cannot read the vCard of {owner} for its avatar hash", failure, owner=owner)
            self._release(owner, None)

        self._store.get(owner).addCallbacks(loaded, failed)
        return waiter

    def _release(self, owner: str, digest: str | None) -> None:
        for waiter in self._waiting.pop(owner, []):
            waiter.callback(digest)

    def _session_ended(self, event: SessionEvent) -> None:
        owner = event.session.bare
        if not self._host.sessions(owner):
            self._hashes.pop(owner, None)
