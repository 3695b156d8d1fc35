"""Personal Eventing Protocol (XEP-0163) on a lean XEP-0060 core, private PEP storage
(XEP-0223) and bookmarks (XEP-0402 with the XEP-0048 / XEP-0049 compatibility rules).

Every account's bare JID is a pubsub service (identity ``pubsub/pep``). The owner
publishes (nodes are auto-created with the default configuration and the request's
publish-options; an existing node whose configuration differs from them answers
``conflict`` + ``precondition-not-met``), retracts, creates, configures, purges and
deletes nodes; anyone the node's access model lets in (``presence``: contacts with a
from/both subscription, ``open``: anyone, ``whitelist``: the owner only) gets items
by id or the newest ``max_items``.

Notifications (``<message type='headline'>`` with a ``pubsub#event``) go to the
owner's available resources and to the available resources of the contacts the
node's access model admits, filtered by entity capabilities (XEP-0115): a resource
gets a node's events only when its caps list ``NODE+notify``. The caps of a resource
come from the ``<c/>`` in its presence; an unknown ``ver`` is resolved with a
disco#info query to that resource (from the account's bare JID), verified against
the hash and cached by ``ver`` (bounded, least recently used out first). When a
contact's resource becomes available, or the owner's own sends initial presence, it
gets the last item of each node it wants (``send_last_published_item``).

Bookmarks compatibility (XEP-0402 section 3, ``#compat`` and ``#compat-pep``): a
change to ``urn:xmpp:bookmarks:1`` rewrites ``storage:bookmarks`` in private XML
storage and in the legacy PEP node ``storage:bookmarks``; a set of
``storage:bookmarks`` in private storage or a publish to the legacy node rewrites the
``urn:xmpp:bookmarks:1`` items (one per room, retracting the rooms no longer there).

Limits (``[extensions.pep]``): items per node, bytes per item, nodes per account,
cached caps.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable

from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.config import ConfigError
from tigasepy.extensions import pep_rules as rules
from tigasepy.extensions.pep_rules import PUBSUB, PUBSUB_EVENT, PUBSUB_OWNER, pubsub_error
from tigasepy.extensions.private import PrivateStored
from tigasepy.extensions.subscription import subscribed_from
from tigasepy.extensions.vcard import VCARD, AvatarData, AvatarPhoto, VCardStored
from tigasepy.interfaces import IExtension, Protocol
from tigasepy.log_level import Logger
from tigasepy.sm.events import (
    PASS, AccountEvent, AccountRemoved, InitialPresence, PresenceToLocal, SessionEnded, SessionEvent, StanzaEvent,
    Target,
)
from tigasepy.sm.host import ExtensionHost
from tigasepy.storage.interfaces import IPepStore, IPrivateStore, IRosterStore, PepItem
from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.caps import CAPS, HASHES, verification_string
from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.serialize import to_xml
from tigasepy.xmpp.stanza import copy_element, element_children

XML_NS = "http://www.w3.org/XML/1998/namespace"
BOOKMARKS2 = "urn:xmpp:bookmarks:1"
LEGACY_BOOKMARKS = "storage:bookmarks"
BOOKMARK_NODES = (BOOKMARKS2, LEGACY_BOOKMARKS)
AVATAR_DATA = "urn:xmpp:avatar:data"
AVATAR_METADATA = "urn:xmpp:avatar:metadata"
VCARD_CONVERSION = "urn:xmpp:pep-vcard-conversion:0"
VCARD4 = "urn:ietf:params:xml:ns:vcard-4.0"
#: Contact resources whose presence one account keeps track of (strangers' directed presence included).
MAX_CONTACT_RESOURCES = 2000
VCARD4_NODE = "urn:xmpp:vcard4"

#: What the account advertises (XEP-0163 section 6, XEP-0060 section 10, XEP-0402 section 3).
FEATURES = tuple(f"{PUBSUB}#{name}" for name in (
    "access-open", "access-presence", "access-whitelist", "auto-create", "auto-subscribe", "config-node",
    "create-and-configure", "create-nodes", "delete-items", "delete-nodes", "filtered-notifications",
    "item-ids", "last-published", "multi-items", "persistent-items", "presence-notifications",
    "publish", "publish-options", "purge-nodes", "retract-items", "retrieve-items",
)) + (PUBSUB,)


@dataclass(frozen=True)
class PepConfig:
    """``[extensions.pep]``: limits and the bookmarks compatibility."""

    max_items: int = 256            # most items a node may keep ('max' in a request means this)
    max_item_bytes: int = 262144    # largest item payload, serialized (an avatar's data fits)
    max_nodes: int = 100            # nodes per account
    caps_cache_size: int = 2000     # resolved entity-capabilities hashes kept
    caps_timeout_s: float = 30.0    # how long a disco#info query for caps may take
    bookmarks_compat: bool = True   # XEP-0402 #compat / #compat-pep
    avatar_conversion: bool = True  # XEP-0398: vCard PHOTO <-> XEP-0084 avatar nodes
    avatar_open_only: bool = True   # PEP -> vCard only when urn:xmpp:avatar:data is open (XEP-0398 9)
    vcard4: bool = True             # XEP-0292: <vcard/> IQs on the urn:xmpp:vcard4 node

    def validate(self, path: tuple[str, ...]) -> None:
        """Every limit at least 1."""
        for name in ("max_items", "max_item_bytes", "max_nodes", "caps_cache_size"):
            if getattr(self, name) < 1:
                raise ConfigError("must be >= 1", path + (name,))
        if self.caps_timeout_s <= 0:
            raise ConfigError("must be > 0", path + ("caps_timeout_s",))


class CapsCache:
    """``ver`` -> the nodes a client wants notifications for, least recently used out first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._known: OrderedDict[str, frozenset[str]] = OrderedDict()

    def get(self, ver: str) -> frozenset[str] | None:
        """The nodes for ``ver`` or None when not resolved."""
        nodes = self._known.get(ver)
        if nodes is not None:
            self._known.move_to_end(ver)
        return nodes

    def put(self, ver: str, nodes: frozenset[str]) -> None:
        """Remember what ``ver`` stands for."""
        self._known[ver] = nodes
        self._known.move_to_end(ver)
        while len(self._known) > self._size:
            self._known.popitem(last=False)

    def __len__(self) -> int:
        return len(self._known)


def _caps_of(stanza: domish.Element | None) -> tuple[str, str, str] | None:
    """(node, ver, hash) of a presence's ``<c/>``, or None."""
    if stanza is None:
        return None
    c = next(stanza.elements(CAPS, "c"), None)
    if c is None or not c.getAttribute("ver") or not c.getAttribute("node"):
        return None
    return c["node"], c["ver"], c.getAttribute("hash", "")


def _checked_ver(query: domish.Element, ver: str, hash_name: str) -> bool:
    """True when the disco#info answer hashes to ``ver`` (XEP-0115 section 5.4)."""
    if hash_name not in HASHES:
        return False
    identities = [(i.getAttribute("category", ""), i.getAttribute("type", ""),
                   i.getAttribute((XML_NS, "lang"), "") or "",
                   i.getAttribute("name", "")) for i in query.elements(ns.DISCO_INFO, "identity")]
    features = [f.getAttribute("var", "") for f in query.elements(ns.DISCO_INFO, "feature")]
    forms = list(query.elements(ns.DATA_FORMS, "x"))
    try:
        return verification_string(identities, features, forms, hash_name) == ver
    except Exception:
        return False


def _item_element(item: PepItem, uri: str, with_payload: bool = True) -> domish.Element:
    element = domish.Element((uri, "item"))
    element["id"] = item.item_id
    if with_payload:
        element.addChild(parse_stanza(item.xml))
    return element


@implementer(IExtension)
class PersonalEventing:
    """The PEP service of every local account."""

    name = "pep"
    protocols = (
        Protocol("XEP-0060", "1.30.0", "partial",
                 "the subset PEP needs: publish (with publish-options), retract, items, create, configure, "
                 "purge, delete; presence/open/whitelist access; no explicit subscriptions"),
        Protocol("XEP-0163", "1.2.2", "complete", "caps-filtered notifications, last items on presence"),
        Protocol("XEP-0223", "1.1.1", "complete", "whitelist nodes with persistent items"),
        Protocol("XEP-0402", "1.2.0", "complete", "with #compat and #compat-pep"),
        Protocol("XEP-0048", "1.2", "complete", "compatibility with XEP-0402 (private XML and PEP)"),
        Protocol("XEP-0084", "1.1.4", "complete", "stored and notified like any PEP node"),
        Protocol("XEP-0398", "1.0.0", "complete", "both directions; the XEP-0153 hash follows"),
        Protocol("XEP-0292", "0.12.0", "partial",
                 "vCard4 over PEP (urn:xmpp:vcard4) and the IQ get/set on it; no vcard-temp mapping"),
    )
    config_type = PepConfig
    _log = Logger()

    def __init__(self, config: PepConfig | None, host: ExtensionHost) -> None:
        self._config = config or PepConfig()
        self._host = host
        self._store = host.store(IPepStore)
        self._roster = host.store(IRosterStore)
        self._private = host.store(IPrivateStore)
        self._caps = CapsCache(self._config.caps_cache_size)
        self._pending: dict[str, list[tuple[str, str]]] = {}   # ver -> [(owner, full jid)] waiting
        self._legacy: dict[str, frozenset[str]] = {}           # full jid -> nodes (caps without hash)
        #: owner -> {contact's available full JID -> caps ver or None}
        self._contacts: dict[str, dict[str, str | None]] = {}
        host.add_identity("pubsub", "pep", target=Target.BARE)
        for feature in FEATURES:
            host.add_feature(feature, target=Target.BARE)
        if self._config.bookmarks_compat:
            host.add_feature(BOOKMARKS2 + "#compat", target=Target.BARE)
            host.add_feature(BOOKMARKS2 + "#compat-pep", target=Target.BARE)
            host.hook(PrivateStored, self._private_stored)
        if self._config.avatar_conversion:
            host.add_feature(VCARD_CONVERSION, target=Target.BARE)
            host.hook(VCardStored, self._vcard_stored)
        if self._config.vcard4:
            host.add_feature(VCARD4, target=Target.BARE)
            host.on_iq(VCARD4, "vcard", self._vcard4, types=("get", "set"), targets=(Target.SELF, Target.BARE))
        for target in (Target.SELF, Target.BARE):
            host.on_iq(PUBSUB, "pubsub", self._pubsub, types=("get", "set"), targets=(target,))
            host.on_iq(PUBSUB_OWNER, "pubsub", self._owner, types=("get", "set"), targets=(target,))
        host.hook(PresenceToLocal, self._presence_to_local, priority=50)
        host.hook(InitialPresence, self._initial_presence)
        host.hook(SessionEnded, self._session_ended)
        host.hook(AccountRemoved, self._forget)

    # -- addressing -----------------------------------------------------------------------
    @staticmethod
    def _parties(event: StanzaEvent) -> tuple[str, str]:
        requester = event.sender.userhost() if event.sender is not None else ""
        owner = event.to.userhost() if event.to is not None and event.target is not Target.SELF else requester
        if not owner:
            raise StanzaError("bad-request")
        return owner, requester

    @staticmethod
    def _action(event: StanzaEvent) -> domish.Element:
        children = element_children(event.stanza.firstChildElement())
        actions = [c for c in children if c.name not in ("publish-options", "configure", "options")]
        if not actions:
            raise StanzaError("bad-request", "No pubsub action")
        return actions[0]

    # -- pubsub ---------------------------------------------------------------------------
    def _pubsub(self, event: StanzaEvent) -> Any:
        owner, requester = self._parties(event)
        action = self._action(event)
        kind = event.stanza["type"]
        query = event.stanza.firstChildElement()
        node = action.getAttribute("node", "")
        if kind == "get" and action.name == "items":
            if not node:
                raise pubsub_error("bad-request", "nodeid-required")
            return self._items(owner, requester, node, action)
        if kind == "set" and action.name in ("publish", "retract", "create"):
            if requester != owner:
                raise pubsub_error("forbidden", None, "Only the owner publishes to a personal node")
            if not node and action.name != "create":
                raise pubsub_error("bad-request", "nodeid-required")
            if action.name == "publish":
                form = rules.find_form(next(query.elements(PUBSUB, "publish-options"), None))
                return self._host.serialized(owner, self._publish_request, owner, node, action, form)
            if action.name == "retract":
                return self._host.serialized(owner, self._retract_request, owner, node, action)
            form = rules.find_form(next(query.elements(PUBSUB, "configure"), None))
            return self._host.serialized(owner, self._create, owner, node, form)
        if action.name in ("subscribe", "unsubscribe", "options", "subscriptions", "affiliations"):
            raise pubsub_error("feature-not-implemented", "unsupported",
                               "Personal nodes are followed with presence and +notify", feature="subscribe")
        raise StanzaError("bad-request", f"Unknown pubsub request {action.name}")

    async def _node(self, owner: str, node: str) -> dict[str, str]:
        config = await self._store.get_node(owner, node)
        if config is None:
            raise StanzaError("item-not-found", f"No node {node}")
        return config

    async def _may_read(self, config: dict[str, str], owner: str, requester: str) -> bool:
        if requester == owner:
            return True
        item = await self._roster.get_item(owner, requester) if config.get("pubsub#access_model") == "presence" \
            else None
        return rules.may_read(config, owner, requester,
                              item is not None and subscribed_from(item) and item.in_roster)

    async def _items(self, owner: str, requester: str, node: str, action: domish.Element) -> domish.Element:
        config = await self._node(owner, node)
        if not await self._may_read(config, owner, requester):
            raise rules.access_error(config)
        ids = [i.getAttribute("id") for i in action.elements(None, "item") if i.getAttribute("id")]
        ids += [i.getAttribute("id") for i in action.elements(PUBSUB, "item") if i.getAttribute("id")]
        limit = action.getAttribute("max_items")
        if ids:
            found = await self._store.get_items(owner, node, ids)
        else:
            if limit is not None and (not limit.isdigit() or int(limit) < 1):
                raise StanzaError("bad-request", "max_items must be a positive number")
            found = await self._store.items(owner, node, int(limit) if limit is not None else None)
        reply = domish.Element((PUBSUB, "pubsub"))
        items = reply.addElement("items")
        items["node"] = node
        for item in found:
            items.addChild(_item_element(item, PUBSUB))
        return reply

    async def _create(self, owner: str, node: str, form: domish.Element | None) -> domish.Element | None:
        config = rules.parse_config(form, rules.DEFAULTS, self._config.max_items)
        if not node:
            node = str(uuid.uuid4())
        if await self._store.get_node(owner, node) is not None:
            raise StanzaError("conflict", f"Node {node} exists")
        await self._check_node_count(owner)
        await self._store.put_node(owner, node, config)
        reply = domish.Element((PUBSUB, "pubsub"))
        reply.addElement("create")["node"] = node
        return reply

    async def _check_node_count(self, owner: str) -> None:
        if len(await self._store.nodes(owner)) >= self._config.max_nodes:
            raise StanzaError("not-allowed", f"An account keeps at most {self._config.max_nodes} nodes")

    async def _publish_request(self, owner: str, node: str, publish: domish.Element,
                               form: domish.Element | None) -> domish.Element:
        items = [c for c in element_children(publish) if c.name == "item"]
        if len(items) != 1:
            raise pubsub_error("bad-request", "item-required" if not items else "invalid-payload",
                               "Publish exactly one item")
        payloads = element_children(items[0])
        if len(payloads) != 1:
            raise pubsub_error("bad-request", "invalid-payload", "An item carries exactly one payload element")
        xml = to_xml(payloads[0])
        if len(xml.encode("utf-8")) > self._config.max_item_bytes:
            raise pubsub_error("not-acceptable", "payload-too-big",
                               f"Items may take {self._config.max_item_bytes} bytes")
        wanted = rules.preconditions(form, self._config.max_items)
        item_id = items[0].getAttribute("id") or str(uuid.uuid4())
        config = await self._store.get_node(owner, node)
        if config is None:
            await self._check_node_count(owner)
            config = {**rules.DEFAULTS, **wanted}
            await self._store.put_node(owner, node, config)
        elif rules.unmet(config, wanted):
            raise pubsub_error("conflict", "precondition-not-met",
                               f"The node's {', '.join(rules.unmet(config, wanted))} differ")
        await self.publish(owner, node, PepItem(item_id, xml), config, sync=True)
        reply = domish.Element((PUBSUB, "pubsub"))
        published = reply.addElement("publish")
        published["node"] = node
        published.addElement("item")["id"] = item_id
        return reply

    async def publish(self, owner: str, node: str, item: PepItem, config: dict[str, str],
                      sync: bool = False) -> None:
        """Store (when persistent) and announce ``item`` on an existing node; ``sync`` runs the
        bookmarks compatibility for a bookmarks node."""
        if rules.flag(config, "pubsub#persist_items"):
            await self._store.publish(owner, node, item, rules.max_items(config))
        event = domish.Element((PUBSUB_EVENT, "event"))
        items = event.addElement("items")
        items["node"] = node
        items.addChild(_item_element(item, PUBSUB_EVENT, rules.flag(config, "pubsub#deliver_payloads")))
        await self._broadcast(owner, node, config, event)
        if sync and self._config.bookmarks_compat and node in BOOKMARK_NODES:
            await self._sync_bookmarks(owner, node)
        if sync and self._config.avatar_conversion and node == AVATAR_METADATA:
            await self._avatar_to_vcard(owner, item.xml)

    async def _retract_request(self, owner: str, node: str, retract: domish.Element) -> None:
        config = await self._node(owner, node)
        ids = [c.getAttribute("id") for c in element_children(retract) if c.name == "item"]
        if not ids or not all(ids):
            raise pubsub_error("bad-request", "item-required")
        notify = retract.getAttribute("notify", "") in ("1", "true") or rules.flag(config, "pubsub#notify_retract")
        for item_id in ids:
            if not await self._store.retract(owner, node, item_id):
                raise StanzaError("item-not-found", f"No item {item_id}")
            if notify:
                await self._announce_retract(owner, node, config, item_id)
        if self._config.bookmarks_compat and node in BOOKMARK_NODES:
            await self._sync_bookmarks(owner, node)
        return None

    async def _announce_retract(self, owner: str, node: str, config: dict[str, str], item_id: str) -> None:
        event = domish.Element((PUBSUB_EVENT, "event"))
        items = event.addElement("items")
        items["node"] = node
        items.addElement("retract")["id"] = item_id
        await self._broadcast(owner, node, config, event)

    # -- owner use cases ------------------------------------------------------------------
    def _owner(self, event: StanzaEvent) -> Any:
        owner, requester = self._parties(event)
        if requester != owner:
            raise pubsub_error("forbidden", None, "Only the owner manages a personal node")
        action = next(iter(element_children(event.stanza.firstChildElement())), None)
        if action is None:
            raise StanzaError("bad-request")
        node = action.getAttribute("node", "")
        kind = event.stanza["type"]
        if action.name == "default" and kind == "get":
            reply = domish.Element((PUBSUB_OWNER, "pubsub"))
            reply.addElement("default").addChild(rules.config_form("", rules.DEFAULTS))
            return reply
        if not node:
            raise pubsub_error("bad-request", "nodeid-required")
        if action.name == "configure" and kind == "get":
            return self._configuration(owner, node)
        if kind == "set" and action.name in ("configure", "delete", "purge"):
            return self._host.serialized(owner, getattr(self, "_" + action.name), owner, node, action)
        if action.name in ("subscriptions", "affiliations"):
            raise pubsub_error("feature-not-implemented", "unsupported", feature="manage-subscriptions")
        raise StanzaError("bad-request", f"Unknown pubsub#owner request {action.name}")

    async def _configuration(self, owner: str, node: str) -> domish.Element:
        config = await self._node(owner, node)
        reply = domish.Element((PUBSUB_OWNER, "pubsub"))
        configure = reply.addElement("configure")
        configure["node"] = node
        configure.addChild(rules.config_form(node, config))
        return reply

    async def _configure(self, owner: str, node: str, action: domish.Element) -> None:
        config = await self._node(owner, node)
        form = rules.find_form(action)
        if form is None:
            raise StanzaError("bad-request", "A configuration form is needed")
        if form.getAttribute("type") == "cancel":
            return None
        await self._store.put_node(owner, node, rules.parse_config(form, config, self._config.max_items))
        return None

    async def _delete(self, owner: str, node: str, action: domish.Element) -> None:
        config = await self._node(owner, node)
        await self._store.delete_node(owner, node)
        if rules.flag(config, "pubsub#notify_delete"):
            event = domish.Element((PUBSUB_EVENT, "event"))
            event.addElement("delete")["node"] = node
            await self._broadcast(owner, node, config, event)
        return None

    async def _purge(self, owner: str, node: str, action: domish.Element) -> None:
        config = await self._node(owner, node)
        await self._store.purge(owner, node)
        event = domish.Element((PUBSUB_EVENT, "event"))
        event.addElement("purge")["node"] = node
        await self._broadcast(owner, node, config, event)
        return None

    # -- notifications --------------------------------------------------------------------
    def _wants(self, full: str, ver: str | None, node: str) -> bool:
        if ver is None:
            return False
        nodes = self._caps.get(ver)
        if nodes is None:
            nodes = self._legacy.get(full)
        return nodes is not None and node in nodes

    def _own_resources(self, owner: str) -> list[tuple[str, str | None]]:
        out = []
        for session in self._host.sessions(owner):
            if session.available:
                caps = _caps_of(session.presence)
                out.append((session.full, caps[1] if caps else None))
        return out

    async def _recipients(self, owner: str, node: str, config: dict[str, str]) -> list[str]:
        targets = [full for full, ver in self._own_resources(owner) if self._wants(full, ver, node)]
        model = config.get("pubsub#access_model", "presence")
        contacts = self._contacts.get(owner, {})
        if model == "whitelist" or not contacts:
            return targets
        allowed: dict[str, bool] = {}
        for full, ver in list(contacts.items()):
            if not self._wants(full, ver, node):
                continue
            bare = full.split("/", 1)[0]
            if bare not in allowed:
                allowed[bare] = await self._may_read(config, owner, bare)
            if allowed[bare]:
                targets.append(full)
        return targets

    async def _broadcast(self, owner: str, node: str, config: dict[str, str], event: domish.Element) -> None:
        for full in await self._recipients(owner, node, config):
            self._send_event(owner, full, event)

    def _send_event(self, owner: str, full: str, event: domish.Element) -> None:
        message = domish.Element((None, "message"))
        message["from"] = owner
        message["to"] = full
        message["type"] = "headline"
        message["id"] = str(uuid.uuid4())
        message.addChild(copy_element(event))
        self._host.route(message)

    async def _send_last(self, owner: str, full: str, ver: str | None) -> None:
        """The last item of every node of ``owner`` that ``full`` wants and may read."""
        bare = full.split("/", 1)[0]
        for node in await self._store.nodes(owner):
            if not self._wants(full, ver, node):
                continue
            config = await self._store.get_node(owner, node)
            if config is None or config.get("pubsub#send_last_published_item") == "never":
                continue
            if not await self._may_read(config, owner, bare):
                continue
            last = await self._store.items(owner, node, 1)
            if last:
                event = domish.Element((PUBSUB_EVENT, "event"))
                items = event.addElement("items")
                items["node"] = node
                items.addChild(_item_element(last[0], PUBSUB_EVENT))
                self._send_event(owner, full, event)

    # -- presence and caps ----------------------------------------------------------------
    def _presence_to_local(self, event: StanzaEvent) -> Any:
        if event.sender is None or event.to is None or event.target is Target.HOST:
            return PASS
        owner = event.to.userhost()
        full = event.sender.full()
        if event.sender.userhost() == owner or not event.sender.resource:
            return PASS
        kind = event.type
        if kind == "unavailable":
            contacts = self._contacts.get(owner)
            if contacts is not None:
                contacts.pop(full, None)
                if not contacts:
                    del self._contacts[owner]
        elif kind == "available" and self._host.sessions(owner):
            contacts = self._contacts.setdefault(owner, {})
            if full not in contacts and len(contacts) >= MAX_CONTACT_RESOURCES:
                return PASS
            caps = _caps_of(event.stanza)
            ver = caps[1] if caps else None
            fresh = full not in contacts or contacts[full] != ver
            contacts[full] = ver
            if fresh and caps is not None:
                self._resolve(owner, full, caps)
        return PASS

    def _initial_presence(self, event: SessionEvent) -> Any:
        session = event.session
        caps = _caps_of(session.presence)
        if caps is not None:
            self._resolve(session.bare, session.full, caps)
        return None

    def _resolve(self, owner: str, full: str, caps: tuple[str, str, str]) -> None:
        """Know what ``full`` wants, then send it the last items (now or when the caps answer)."""
        node, ver, hash_name = caps
        if self._caps.get(ver) is not None or full in self._legacy:
            self._host.serialized(owner, self._send_last, owner, full, ver)
            return
        waiting = self._pending.get(ver)
        if waiting is not None:
            if len(waiting) < 100:
                waiting.append((owner, full))
            return
        if len(self._pending) >= self._config.caps_cache_size:
            return    # too many queries in flight: this resource is asked on its next presence
        self._pending[ver] = [(owner, full)]
        query = domish.Element((None, "iq"))
        query["type"] = "get"
        query["from"] = owner
        query["to"] = full
        query.addElement((ns.DISCO_INFO, "query"))["node"] = f"{node}#{ver}"
        d = defer.maybeDeferred(self._host.request, query, self._config.caps_timeout_s)
        d.addCallback(self._caps_answer, full, ver, hash_name)
        d.addErrback(lambda f: self._log.failure("caps query failed", f))

    def _caps_answer(self, reply: domish.Element | None, full: str, ver: str, hash_name: str) -> None:
        waiting = self._pending.pop(ver, [])
        if reply is None or reply.getAttribute("type") != "result":
            return
        query = next(reply.elements(ns.DISCO_INFO, "query"), None)
        if query is None:
            return
        nodes = rules.notify_nodes(f.getAttribute("var", "") for f in query.elements(ns.DISCO_INFO, "feature"))
        if hash_name and _checked_ver(query, ver, hash_name):
            self._caps.put(ver, nodes)
            asked = waiting
        else:
            # legacy caps or a hash that does not match: trust the answer for that resource only
            if len(self._legacy) >= self._config.caps_cache_size:
                self._legacy.pop(next(iter(self._legacy)))
            self._legacy[full] = nodes
            asked = [(o, f) for o, f in waiting if f == full]   # the others ask again on their next presence
        for owner, who in asked:
            self._host.serialized(owner, self._send_last, owner, who, ver)

    def _session_ended(self, event: SessionEvent) -> Any:
        session = event.session
        self._legacy.pop(session.full, None)
        if not any(s is not session for s in self._host.sessions(session.bare)):
            self._contacts.pop(session.bare, None)
        for contacts in self._contacts.values():
            contacts.pop(session.full, None)
        return None

    async def _forget(self, event: AccountEvent) -> None:
        self._contacts.pop(event.jid, None)
        await self._store.remove_owner(event.jid)

    # -- vCard4 (XEP-0292) ---------------------------------------------------------------------
    def _vcard4(self, event: StanzaEvent) -> Any:
        owner, requester = self._parties(event)
        if event.stanza["type"] == "get":
            return self._vcard4_get(owner, requester)
        if requester != owner:
            raise StanzaError("forbidden", "You can only set your own vCard")
        vcard = event.stanza.firstChildElement()
        xml = to_xml(vcard)
        if len(xml.encode("utf-8")) > self._config.max_item_bytes:
            raise StanzaError("not-acceptable", f"The vCard is larger than {self._config.max_item_bytes} bytes")
        return self._host.serialized(owner, self._vcard4_set, owner, xml)

    async def _vcard4_get(self, owner: str, requester: str) -> domish.Element:
        config = await self._store.get_node(owner, VCARD4_NODE)
        if config is None or not await self._may_read(config, owner, requester):
            if requester == owner:
                return domish.Element((VCARD4, "vcard"))
            raise StanzaError("item-not-found" if config is None else "forbidden")
        found = await self._store.items(owner, VCARD4_NODE, 1)
        if not found:
            return domish.Element((VCARD4, "vcard"))
        return parse_stanza(found[0].xml)

    async def _vcard4_set(self, owner: str, xml: str) -> None:
        config = await self._store.get_node(owner, VCARD4_NODE)
        if config is None:
            await self._check_node_count(owner)
        config = await self._ensure_node(owner, VCARD4_NODE, {})
        await self.publish(owner, VCARD4_NODE, PepItem("current", xml), config)
        return None

    # -- avatar conversion (XEP-0398) -------------------------------------------------------
    async def _avatar_to_vcard(self, owner: str, metadata_xml: str) -> None:
        """The avatar a metadata item points at becomes the vCard's PHOTO (empty metadata: none)."""
        try:
            metadata = parse_stanza(metadata_xml)
        except Exception:
            return
        infos = [i for i in element_children(metadata) if i.name == "info" and i.getAttribute("id")]
        if not infos:
            await defer.maybeDeferred(self._host.run_hooks, AvatarPhoto, AvatarData(owner, None))
            return
        info = next((i for i in infos if not i.getAttribute("url")), None)
        if info is None:
            return
        config = await self._store.get_node(owner, AVATAR_DATA)
        if config is None or (self._config.avatar_open_only
                              and config.get("pubsub#access_model") != "open"):
            return
        found = await self._store.get_items(owner, AVATAR_DATA, [info["id"]])
        if not found:
            return
        try:
            data = base64.b64decode("".join(str(parse_stanza(found[0].xml)).split()), validate=True)
        except Exception:
            return
        if hashlib.sha1(data).hexdigest() != info["id"]:
            return
        await defer.maybeDeferred(self._host.run_hooks, AvatarPhoto,
                                  AvatarData(owner, data, info.getAttribute("type", "")))

    def _vcard_stored(self, stored: Any) -> Any:
        photo = next(stored.vcard.elements(VCARD, "PHOTO"), None)
        binval = next(photo.elements(VCARD, "BINVAL"), None) if photo is not None else None
        if photo is None or binval is None or not "".join(str(binval).split()):
            return PASS
        try:
            data = base64.b64decode("".join(str(binval).split()), validate=True)
        except Exception:
            return PASS
        kind = next(photo.elements(VCARD, "TYPE"), None)
        d = self._host.serialized(stored.owner, self._vcard_to_avatar, stored.owner, data,
                                  str(kind).strip() if kind is not None else "image/png")
        return defer.maybeDeferred(lambda: d).addCallback(lambda _: PASS)

    async def _vcard_to_avatar(self, owner: str, data: bytes, mime_type: str) -> None:
        """Publish the vCard's photo to the avatar nodes (XEP-0398 section 4.2)."""
        digest = hashlib.sha1(data).hexdigest()
        current = await self._store.items(owner, AVATAR_METADATA, 1)
        if current and f"id='{digest}'" in current[0].xml.replace('"', "'"):
            return
        if len(base64.b64encode(data)) + 100 > self._config.max_item_bytes:
            return
        open_node = {"pubsub#access_model": "open"}
        payload = domish.Element((AVATAR_DATA, "data"))
        payload.addContent(base64.b64encode(data).decode("ascii"))
        data_config = await self._ensure_node(owner, AVATAR_DATA, open_node)
        await self.publish(owner, AVATAR_DATA, PepItem(digest, to_xml(payload)), data_config)
        metadata = domish.Element((AVATAR_METADATA, "metadata"))
        info = metadata.addElement("info")
        info["id"], info["bytes"], info["type"] = digest, str(len(data)), mime_type or "image/png"
        meta_config = await self._ensure_node(owner, AVATAR_METADATA, open_node)
        await self.publish(owner, AVATAR_METADATA, PepItem(digest, to_xml(metadata)), meta_config)

    # -- bookmarks compatibility (XEP-0402 section 3) ---------------------------------------
    def _private_stored(self, stored: Any) -> Any:
        xml = stored.items.get(LEGACY_BOOKMARKS)
        if xml is None:
            return PASS
        # already inside the account's serialized job (private storage's set)
        d = defer.ensureDeferred(self._from_legacy(stored.owner, xml, True))
        return d.addCallback(lambda _: PASS)

    async def _sync_bookmarks(self, owner: str, node: str) -> None:
        if node == BOOKMARKS2:
            await self._to_legacy(owner)
        else:
            last = await self._store.items(owner, LEGACY_BOOKMARKS, 1)
            if last:
                await self._from_legacy(owner, last[0].xml, False)

    async def _ensure_node(self, owner: str, node: str, config: dict[str, str]) -> dict[str, str]:
        existing = await self._store.get_node(owner, node)
        if existing is None:
            existing = {**rules.DEFAULTS, **config}
            await self._store.put_node(owner, node, existing)
        return existing

    async def _to_legacy(self, owner: str) -> None:
        """Rewrite ``storage:bookmarks`` (private XML and the legacy PEP node) from the 0402 items."""
        storage = domish.Element((LEGACY_BOOKMARKS, "storage"))
        for item in reversed(await self._store.items(owner, BOOKMARKS2)):
            try:
                conference = parse_stanza(item.xml)
            except Exception:
                continue
            storage.addChild(legacy_conference(item.item_id, conference))
        xml = to_xml(storage)
        await self._private.set(owner, {LEGACY_BOOKMARKS: xml})
        config = await self._ensure_node(owner, LEGACY_BOOKMARKS, {"pubsub#access_model": "whitelist"})
        await self.publish(owner, LEGACY_BOOKMARKS, PepItem("current", xml), config)

    async def _from_legacy(self, owner: str, xml: str, from_private: bool) -> None:
        """Rewrite the 0402 items (and the other legacy copy) from a ``storage:bookmarks`` element."""
        try:
            storage = parse_stanza(xml if xml.lstrip().startswith("<storage") else
                                   f"<storage xmlns='{LEGACY_BOOKMARKS}'/>")
        except Exception:
            return
        rooms: dict[str, domish.Element] = {}
        for child in element_children(storage):
            if child.name == "conference" and child.getAttribute("jid"):
                try:
                    room = JID(child["jid"]).userhost()
                except Exception:
                    continue
                rooms[room] = new_conference(child)
        config = await self._ensure_node(owner, BOOKMARKS2, {
            "pubsub#access_model": "whitelist", "pubsub#max_items": str(self._config.max_items),
            "pubsub#send_last_published_item": "never"})
        current = {i.item_id: i.xml for i in await self._store.items(owner, BOOKMARKS2)}
        for room, conference in rooms.items():
            new_xml = to_xml(conference)
            if current.get(room) != new_xml:
                await self.publish(owner, BOOKMARKS2, PepItem(room, new_xml), config)
        for room in current:
            if room not in rooms and await self._store.retract(owner, BOOKMARKS2, room):
                await self._announce_retract(owner, BOOKMARKS2, config, room)
        if from_private:
            legacy = await self._ensure_node(owner, LEGACY_BOOKMARKS, {"pubsub#access_model": "whitelist"})
            await self.publish(owner, LEGACY_BOOKMARKS, PepItem("current", xml), legacy)
        else:
            await self._private.set(owner, {LEGACY_BOOKMARKS: xml})


def new_conference(legacy: domish.Element) -> domish.Element:
    """A XEP-0048 ``<conference/>`` as XEP-0402's (jid becomes the item id)."""
    return _carry_conference(legacy, domish.Element((BOOKMARKS2, "conference")))


def legacy_conference(room: str, conference: domish.Element) -> domish.Element:
    """A XEP-0402 ``<conference/>`` (with its room JID) as XEP-0048's."""
    legacy = domish.Element((LEGACY_BOOKMARKS, "conference"))
    legacy["jid"] = room
    return _carry_conference(conference, legacy)


def _carry_conference(source: domish.Element, target: domish.Element) -> domish.Element:
    """Copy what both bookmark formats share (name, autojoin, nick, password) into ``target``."""
    if source.getAttribute("name"):
        target["name"] = source["name"]
    target["autojoin"] = "true" if source.getAttribute("autojoin") in ("1", "true") else "false"
    for name in ("nick", "password"):
        child = next((c for c in element_children(source) if c.name == name), None)
        if child is not None and str(child):
            target.addElement(name, content=str(child))
    return target


def conferences(xml: str) -> Iterable[str]:
    """The room JIDs of a ``storage:bookmarks`` fragment (for tests and export)."""
    storage = parse_stanza(xml)
    return [c["jid"] for c in element_children(storage) if c.name == "conference" and c.getAttribute("jid")]
