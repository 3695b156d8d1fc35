"""XEP-0227 portable import and export of user data (``urn:xmpp:pie:0``, version 1.1).

What moves, per account (``<host jid>``/``<user name>``):

- credentials: ``<scram-credentials xmlns='urn:xmpp:pie:0#scram'>`` for SCRAM-SHA-1 and
  SCRAM-SHA-256, both ways; a plaintext ``password`` attribute in an import is turned
  into SCRAM keys (the configured hashes and iterations) and never stored;
- the roster (``jabber:iq:roster`` with subscription, ``ask`` for pending-out,
  ``approved`` pre-approvals, groups) and pending inbound subscription requests
  (``<presence type='subscribe'/>`` children of ``<user/>``);
- the vCard (``vcard-temp``), private XML storage (``jabber:iq:private``), offline
  messages (``<offline-messages/>``, oldest first, with their delay stamp), privacy
  lists with the default list (``jabber:iq:privacy``, the XEP-0191 blocklist lives in
  the default list), the message archive (``<archive xmlns='urn:xmpp:pie:0#mam'>``
  of XEP-0313 ``<result/>`` elements, oldest first) and PEP nodes (XEP-0163: their
  configuration as ``<pubsub xmlns='...#owner'><configure/>`` data forms, their items,
  oldest first, in ``<pubsub><items/>``).

Anything else in an import (node options tigasepy does not know, PEP affiliations and
subscriptions, unknown namespaces) is skipped and counted (``ImportReport.ignored``), as
the XEP asks: ignore and tell the operator.

Layers, so that the command line and (later) an ad-hoc command share them:

- ``load_import(paths)`` reads files (with XInclude, XEP-0227 section 5) into
  ``UserData`` without touching storage; a bad file raises ``PortabilityError``
  with one line naming the file and what is wrong;
- ``read_user_txn`` / ``import_user_txn`` move one account between ``UserData``
  and the SQL stores in one transaction (``fn(cursor, engine, ...)``, like every
  ``*_txn`` function: run them with ``run_sync`` or ``Database.run_interaction``);
- ``user_element`` / ``ExportWriter`` write XEP-0227 XML, one file or the
  directory layout of section 5.1.

Import files are parsed with the restrictions of stream parsing (no DTDs, no
entities), so a hostile file cannot expand entities or read local files; an
XInclude ``href`` must be a relative path inside the main file's folder.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from datetime import datetime, timezone
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TextIO
from xml.parsers import expat

from twisted.words.xish import domish

from tigasepy.admin.commands import delete_account_and_data_txn
from tigasepy.auth.accounts import InvalidAccountJID, InvalidPassword, make_credentials, prepare_account_jid
from tigasepy.auth.scram import HASHES, digest_size
from tigasepy.storage.engines import DatabaseEngine
from tigasepy.storage.interfaces import (
    PRIVACY_KINDS, AccountExists, ArchiveQuery, PepItem, PrivacyItem, PrivacySettings, RosterItem,
    ScramCredential, VCard,
)
from tigasepy.storage.sql import accounts as sql_accounts
from tigasepy.storage.sql import archive as sql_archive
from tigasepy.storage.sql import offline as sql_offline
from tigasepy.storage.sql import pep as sql_pep
from tigasepy.storage.sql import privacy as sql_privacy
from tigasepy.storage.sql import private as sql_private
from tigasepy.storage.sql import roster as sql_roster
from tigasepy.storage.sql import vcard as sql_vcard
from tigasepy.stream.parser import StreamParseError, parse_stanza
from tigasepy.xmpp.jid import InvalidFormat, parse_jid

PIE = "urn:xmpp:pie:0"
PIE_SCRAM = "urn:xmpp:pie:0#scram"
PIE_MAM = "urn:xmpp:pie:0#mam"
XINCLUDE = "http://www.w3.org/2001/XInclude"
CLIENT = "jabber:client"
ROSTER = "jabber:iq:roster"
PRIVATE = "jabber:iq:private"
PRIVACY = "jabber:iq:privacy"
VCARD = "vcard-temp"
DELAY = "urn:xmpp:delay"
FORWARD = "urn:xmpp:forward:0"
MAM = "urn:xmpp:mam:2"
MAM_NAMESPACES = ("urn:xmpp:mam:2", "urn:xmpp:mam:1", "urn:xmpp:mam:0")
SID = "urn:xmpp:sid:0"
PUBSUB = "http://jabber.org/protocol/pubsub"
PUBSUB_OWNER = "http://jabber.org/protocol/pubsub#owner"
DATA_FORMS = "jabber:x:data"
#: The most items a PEP node keeps unless ``[extensions.pep] max_items`` says otherwise.
PEP_MAX_ITEMS = 256
#: ejabberd marks offline messages with this (its own archive's id); meaningless here.
EJABBERD_ARCHIVED = "urn:xmpp:mam:tmp"

#: XEP-0227 mechanism names of the hashes we keep keys for.
MECHANISMS = {f"SCRAM-{name}": name for name in HASHES}

#: Archive rows read per query while exporting.
_ARCHIVE_PAGE = 500

#: Longest chain of XIncludes followed (main file -> host file -> user file -> user part).
_MAX_INCLUDE_DEPTH = 4


class PortabilityError(Exception):
    """An import file that cannot be used, or an export that cannot be written (one line)."""


# --- the data of one account --------------------------------------------------------------

@dataclass
class ArchiveEntry:
    """One archived message to import or export (see ``ArchivedMessage``)."""

    id: str
    with_jid: str
    stamp: float
    xml: str


@dataclass
class UserData:
    """Everything XEP-0227 carries for one account, as the stores keep it.

    ``password`` is only set between reading an import file and ``derive_credentials``.
    """

    jid: str
    credentials: list[ScramCredential] = field(default_factory=list)
    password: str | None = field(default=None, repr=False)
    roster: list[RosterItem] = field(default_factory=list)
    vcard: VCard | None = None
    private: dict[str, str] = field(default_factory=dict)
    offline: list[tuple[float, str]] = field(default_factory=list)
    archive: list[ArchiveEntry] = field(default_factory=list)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    #: PEP node -> (its configuration, its items oldest first).
    pep: dict[str, tuple[dict[str, str], list[PepItem]]] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.jid.partition("@")[2]

    @property
    def name(self) -> str:
        return self.jid.partition("@")[0]


# --- XML ------------------------------------------------------------------------------------

def _escape(text: str, attribute: bool = False) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if attribute:
        text = text.replace("'", "&apos;").replace('"', "&quot;")
    return text


def to_text(element: domish.Element, scope: str | None = None) -> str:
    """Serialize ``element`` with a default-namespace declaration wherever the namespace
    changes (``scope`` is the namespace in effect around it); ``uri`` None means ``jabber:client``."""
    out: list[str] = []
    _write(element, scope, out.append)
    return "".join(out)


def _write(element: domish.Element, scope: str | None, w: Callable[[str], None]) -> None:
    uri = element.uri if element.uri is not None else CLIENT
    w("<" + element.name)
    if uri != scope:
        w(f" xmlns='{_escape(uri, True)}'")
    count = 0
    for key, value in element.attributes.items():
        if isinstance(key, tuple):
            if key[0] == "http://www.w3.org/XML/1998/namespace":
                w(f" xml:{key[1]}='{_escape(value, True)}'")
            else:
                count += 1
                w(f" xmlns:a{count}='{_escape(key[0], True)}' a{count}:{key[1]}='{_escape(value, True)}'")
        else:
            w(f" {key}='{_escape(value, True)}'")
    if not element.children:
        w("/>")
        return
    w(">")
    for child in element.children:
        if isinstance(child, domish.Element):
            _write(child, uri, w)
        else:
            w(_escape(str(child)))
    w("</" + element.name + ">")


def _restricted(*_args: Any) -> None:
    raise PortabilityError("DTDs and entity declarations are not allowed")


def parse_file(path: Path) -> domish.Element:
    """The root element of the XML file ``path`` (namespaces kept, comments dropped).

    Raises:
        PortabilityError: unreadable, not well-formed, or with a DTD or entities.
    """
    stack: list[domish.Element] = []
    root: list[domish.Element] = []

    def start(qname: str, attrs: dict[str, str]) -> None:
        uri, _, name = qname.rpartition(" ")
        element = domish.Element((uri or None, name))
        for key, value in attrs.items():
            if " " in key:
                auri, _, local = key.rpartition(" ")
                element.attributes[(auri, local)] = value
            else:
                element.attributes[key] = value
        if stack:
            stack[-1].addChild(element)
        else:
            root.append(element)
        stack.append(element)

    def end(_qname: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if stack:
            stack[-1].addContent(data)

    parser = expat.ParserCreate("UTF-8", " ")
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.StartDoctypeDeclHandler = _restricted
    parser.EntityDeclHandler = _restricted
    try:
        with open(path, "rb") as f:
            parser.ParseFile(f)
    except OSError as e:
        raise PortabilityError(f"{path}: cannot read: {e.strerror or e}") from None
    except expat.ExpatError as e:
        raise PortabilityError(f"{path}: line {e.lineno}: not well-formed XML "
                               f"({expat.errors.messages[e.code]})") from None
    except PortabilityError as e:
        raise PortabilityError(f"{path}: line {parser.CurrentLineNumber}: {e}") from None
    return root[0]


def _children(element: domish.Element) -> list[domish.Element]:
    return [c for c in element.children if isinstance(c, domish.Element)]


def _text(element: domish.Element) -> str:
    return "".join(str(c) for c in element.children if not isinstance(c, domish.Element))


def _neutral(stanza: domish.Element) -> domish.Element:
    """``stanza`` (a ``jabber:client`` message or presence) made namespace-neutral, as the
    stream parser delivers stanzas: ``uri`` None on it and on its ``jabber:client`` children."""
    def walk(element: domish.Element, parent_neutral: bool) -> None:
        neutral = element.uri == CLIENT and parent_neutral
        if neutral:
            element.uri = None
            element.defaultUri = None
        for child in _children(element):
            walk(child, neutral)

    walk(stanza, True)
    return stanza


def _qualified(stanza: domish.Element) -> domish.Element:
    """The opposite of ``_neutral``: ``uri`` None becomes ``jabber:client``."""
    if stanza.uri is None:
        stanza.uri = CLIENT
    for child in _children(stanza):
        _qualified(child)
    return stanza


# --- reading import files -------------------------------------------------------------------

@dataclass
class ImportReport:
    """What reading (and then importing) found."""

    users: list[UserData] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def ignore(self, what: str) -> None:
        self.ignored[what] = self.ignored.get(what, 0) + 1


class _Reader:
    """Reads XEP-0227 files into ``UserData`` (see ``load_import``)."""

    def __init__(self, report: ImportReport, now: float, domains: Sequence[str] | None,
                 pep_max_items: int = PEP_MAX_ITEMS) -> None:
        self.report = report
        self.now = now
        self.domains = domains
        self.pep_max_items = pep_max_items
        self.seen: dict[str, Path] = {}

    # -- documents and includes --------------------------------------------------------
    def read(self, path: Path) -> None:
        path = Path(path)
        root = parse_file(path)
        top = path.resolve().parent
        if (root.uri, root.name) != (PIE, "server-data"):
            raise PortabilityError(f"{path}: the root element is <{root.name} xmlns='{root.uri or ''}'>, "
                                   f"not <server-data xmlns='{PIE}'> (XEP-0227)")
        for child, where, depth in self._expand(root, path, top, 0):
            if (child.uri, child.name) == (PIE, "host"):
                self._host(child, where, top, depth)
            else:
                self._ignore_element(child)

    def _expand(self, parent: domish.Element, path: Path, top: Path,
                depth: int) -> Iterator[tuple[domish.Element, Path, int]]:
        """The children of ``parent`` (in file ``path``, ``depth`` includes down), with
        XInclude elements replaced by the root of the file they include; each comes with
        its file and include depth."""
        for child in _children(parent):
            if (child.uri, child.name) != (XINCLUDE, "include"):
                yield child, path, depth
                continue
            target = self._include(child, path, top, depth)
            yield parse_file(target), target, depth + 1

    def _include(self, include: domish.Element, path: Path, top: Path, depth: int) -> Path:
        href = include.getAttribute("href")
        if depth >= _MAX_INCLUDE_DEPTH:
            raise PortabilityError(f"{path}: XIncludes nested too deeply")
        if not href or include.getAttribute("parse") not in (None, "xml") or include.getAttribute("xpointer"):
            raise PortabilityError(f"{path}: unsupported <include/> (only href= with a relative path, "
                                   "no parse or xpointer)")
        if "://" in href or href.startswith("/") or href.startswith("file:"):
            raise PortabilityError(f"{path}: <include href='{href}'/> must be a relative path")
        target = (path.parent / href).resolve()
        if top != target and top not in target.parents:
            raise PortabilityError(f"{path}: <include href='{href}'/> points outside {top}")
        return target

    def _ignore_element(self, element: domish.Element) -> None:
        self.report.ignore(f"{{{element.uri or ''}}}{element.name}")

    def _host(self, host: domish.Element, path: Path, top: Path, depth: int) -> None:
        jid = host.getAttribute("jid")
        try:
            parsed = parse_jid(jid)
        except InvalidFormat:
            parsed = None
        if not jid or parsed is None or parsed.user or parsed.resource:
            raise PortabilityError(f"{path}: <host> needs jid='a domain', not {jid!r}")
        domain = parsed.host
        if self.domains is not None and domain not in self.domains:
            return
        if domain not in self.report.hosts:
            self.report.hosts.append(domain)
        for child, user_path, user_depth in self._expand(host, path, top, depth):
            if (child.uri, child.name) == (PIE, "user"):
                try:
                    user = self.user(domain, child, user_path, top, user_depth)
                except PortabilityError as e:
                    raise PortabilityError(f"{user_path}: {e}") from None
                if user.jid in self.seen:
                    raise PortabilityError(f"{user_path}: user {user.jid} appears twice in the import "
                                           f"(first in {self.seen[user.jid]})")
                self.seen[user.jid] = user_path
                self.report.users.append(user)
            else:
                self._ignore_element(child)

    # -- one user ------------------------------------------------------------------------
    def user(self, domain: str, element: domish.Element, path: Path | None = None, top: Path | None = None,
             depth: int = 0) -> UserData:
        name = element.getAttribute("name")
        if not name:
            raise PortabilityError("<user> without name=")
        try:
            jid = prepare_account_jid(f"{name}@{domain}")
        except InvalidAccountJID as e:
            raise PortabilityError(f"user {name!r}: {e}") from None
        user = UserData(jid=jid, password=element.getAttribute("password"))
        where = f"user {jid}"
        children = ([c for c, _where, _depth in self._expand(element, path, top, depth)]
                    if path is not None and top is not None else _children(element))
        pending: list[str] = []
        pep_items: dict[str, list[PepItem]] = {}
        for child in children:
            key = (child.uri, child.name)
            try:
                if key == (PIE_SCRAM, "scram-credentials"):
                    credential = self._scram(child)
                    if credential is not None:
                        user.credentials.append(credential)
                elif key == (ROSTER, "query"):
                    user.roster.extend(self._roster(child))
                elif key in ((CLIENT, "presence"), (PIE, "presence")):   # Prosody 0.12 omits jabber:client
                    contact = self._subscribe_request(child)
                    if contact is not None:
                        pending.append(contact)
                elif key == (VCARD, "vCard"):
                    user.vcard = self._vcard(child)
                elif key == (PRIVATE, "query"):
                    user.private.update(self._private(child))
                elif key == (PIE, "offline-messages"):
                    user.offline.extend(self._offline(child, jid, domain))
                elif key == (PIE_MAM, "archive"):
                    user.archive.extend(self._archive(child, jid))
                elif key == (PRIVACY, "query"):
                    user.privacy = self._privacy(child)
                elif key == (PUBSUB_OWNER, "pubsub"):
                    for node, config in self._pep_configs(child).items():
                        user.pep[node] = (config, [])
                elif key == (PUBSUB, "pubsub"):
                    for node, items in self._pep_items(child).items():
                        pep_items.setdefault(node, []).extend(items)
                else:
                    self._ignore_element(child)
            except PortabilityError as e:
                raise PortabilityError(f"{where}: {e}") from None
        unique: dict[str, ScramCredential] = {}
        for credential in user.credentials:
            if unique.setdefault(credential.hash_name, credential) != credential:
                raise PortabilityError(f"{where}: two different <scram-credentials/> for SCRAM-{credential.hash_name}")
        if len(unique) != len(user.credentials):
            note = "identical <scram-credentials/> given more than once (as Prosody 0.12 writes them); kept once"
            if note not in self.report.notes:
                self.report.notes.append(note)
            user.credentials = list(unique.values())
        if pending:
            user.roster = _with_pending(user.roster, pending)
        for node, items in pep_items.items():
            if node not in user.pep:
                self.report.ignore("PEP items without a node configuration (defaults used)")
                user.pep[node] = (self._pep_defaults(), [])
            user.pep[node][1].extend(items)
        return user

    def _pep_defaults(self) -> dict[str, str]:
        from tigasepy.extensions.pep_rules import DEFAULTS

        return dict(DEFAULTS)

    def _pep_configs(self, pubsub: domish.Element) -> dict[str, dict[str, str]]:
        from tigasepy.extensions.pep_rules import DEFAULTS, normalize
        from tigasepy.xmpp.errors import StanzaError

        out: dict[str, dict[str, str]] = {}
        for child in _children(pubsub):
            node = child.getAttribute("node")
            if child.uri != PUBSUB_OWNER or child.name != "configure":
                self.report.ignore(f"PEP <{child.name}/> (tigasepy keeps no explicit affiliations or subscriptions)")
                continue
            if not node:
                raise PortabilityError("PEP <configure/> without node=")
            config = dict(DEFAULTS)
            form = next(child.elements(DATA_FORMS, "x"), None)
            for field_ in form.elements(DATA_FORMS, "field") if form is not None else ():
                var = field_.getAttribute("var")
                if not var or var == "FORM_TYPE":
                    continue
                values = [_text(v) for v in field_.elements(DATA_FORMS, "value")]
                if var not in DEFAULTS:
                    self.report.ignore(f"PEP node option {var}")
                    continue
                try:
                    config[var] = normalize(var, values[0] if values else "", self.pep_max_items)
                except StanzaError:
                    self.report.ignore(f"PEP node option {var} with a value tigasepy cannot take")
            out[node] = config
        return out

    def _pep_items(self, pubsub: domish.Element) -> dict[str, list[PepItem]]:
        import uuid

        out: dict[str, list[PepItem]] = {}
        for items in _children(pubsub):
            node = items.getAttribute("node")
            if items.uri != PUBSUB or items.name != "items":
                self._ignore_element(items)
                continue
            if not node:
                raise PortabilityError("PEP <items/> without node=")
            for item in items.elements(PUBSUB, "item"):
                payloads = _children(item)
                if len(payloads) != 1:
                    raise PortabilityError(f"PEP node {node!r}: an <item/> carries exactly one payload element")
                out.setdefault(node, []).append(
                    PepItem(item.getAttribute("id") or str(uuid.uuid4()), to_text(payloads[0])))
        return out

    def _scram(self, element: domish.Element) -> ScramCredential | None:
        mechanism = element.getAttribute("mechanism") or ""
        hash_name = MECHANISMS.get(mechanism)
        if hash_name is None:
            self.report.ignore(f"scram-credentials mechanism={mechanism}")
            return None
        values: dict[str, str] = {}
        for child in _children(element):
            if child.uri == PIE_SCRAM and child.name in ("iter-count", "salt", "server-key", "stored-key"):
                if child.name in values:
                    raise PortabilityError(f"{mechanism}: <{child.name}/> given twice")
                values[child.name] = "".join(_text(child).split())
        missing = [n for n in ("iter-count", "salt", "server-key", "stored-key") if n not in values]
        if missing:
            raise PortabilityError(f"{mechanism}: <{missing[0]}/> is missing")
        count = values["iter-count"]
        if not count.isdigit() or count.startswith("0") or len(count) > 9:
            raise PortabilityError(f"{mechanism}: <iter-count/> must be a positive integer, not {count!r}")
        size = digest_size(hash_name)
        decoded = {n: _b64(values[n], mechanism, n) for n in ("salt", "server-key", "stored-key")}
        if any(len(decoded[n]) != size for n in ("server-key", "stored-key")):
            # ejabberd 23.01 writes its stored base64 text base64-encoded once more.
            try:
                twice = {n: base64.b64decode(decoded[n], validate=True) for n in decoded}
            except (binascii.Error, ValueError):
                twice = None
            if twice is None or any(len(twice[n]) != size for n in ("server-key", "stored-key")):
                raise PortabilityError(f"{mechanism}: <server-key/> and <stored-key/> must hold "
                                       f"{size} bytes (base64)")
            decoded = twice
            note = "SCRAM values were base64-encoded twice (as ejabberd 23.01 writes them); decoded twice"
            if note not in self.report.notes:
                self.report.notes.append(note)
        if not decoded["salt"]:
            raise PortabilityError(f"{mechanism}: empty <salt/>")
        return ScramCredential(hash_name=hash_name, salt=decoded["salt"], iterations=int(count),
                               stored_key=decoded["stored-key"], server_key=decoded["server-key"])

    def _roster(self, query: domish.Element) -> list[RosterItem]:
        items: dict[str, RosterItem] = {}
        for item in _children(query):
            if (item.uri, item.name) != (ROSTER, "item"):
                self._ignore_element(item)
                continue
            contact = _jid(item.getAttribute("jid"), "roster item")
            subscription = item.getAttribute("subscription") or "none"
            if subscription == "remove":
                continue
            if subscription not in ("none", "to", "from", "both"):
                raise PortabilityError(f"roster item {contact}: subscription={subscription!r}")
            groups: list[str] = []
            for group in item.elements(ROSTER, "group"):
                name = _text(group).strip()
                if name and name not in groups:
                    groups.append(name)
            items[contact] = RosterItem(
                contact=contact, name=item.getAttribute("name") or None, subscription=subscription,
                ask=item.getAttribute("ask") == "subscribe",
                approved=item.getAttribute("approved") in ("true", "1"), groups=tuple(groups))
        return list(items.values())

    def _subscribe_request(self, presence: domish.Element) -> str | None:
        if presence.getAttribute("type") != "subscribe":
            self.report.ignore(f"presence type={presence.getAttribute('type')}")
            return None
        sender = _jid(presence.getAttribute("from"), "subscription request")
        return sender.partition("/")[0]

    def _vcard(self, element: domish.Element) -> VCard:
        from tigasepy.extensions.vcard import photo_hash
        from tigasepy.xmpp.errors import StanzaError

        try:
            digest = photo_hash(element)
        except StanzaError:
            self.report.ignore("vCard PHOTO with a BINVAL that is not base64 (kept, without avatar hash)")
            digest = None
        return VCard(xml=to_text(element), photo_hash=digest)

    def _private(self, query: domish.Element) -> dict[str, str]:
        from tigasepy.extensions.private import reserved

        groups: dict[str, list[str]] = {}
        for child in _children(query):
            namespace = child.uri or ""
            if not namespace or reserved(namespace):
                self.report.ignore(f"private storage in reserved namespace {namespace!r}")
                continue
            groups.setdefault(namespace, []).append(to_text(child))
        return {namespace: "".join(parts) for namespace, parts in groups.items()}

    def _offline(self, container: domish.Element, owner: str, domain: str) -> list[tuple[float, str]]:
        from tigasepy.extensions.mam import parse_stamp, strip_stanza_ids

        out = []
        for message in _children(container):
            if (message.uri, message.name) != (CLIENT, "message"):
                self._ignore_element(message)
                continue
            stanza = _neutral(message)
            strip_stanza_ids(stanza, owner)
            _strip(stanza, EJABBERD_ARCHIVED, "archived")
            stamp = None
            for delay in stanza.elements(DELAY, "delay"):
                if delay.getAttribute("from") == domain:
                    stamp = _stamp(parse_stamp, delay.getAttribute("stamp"), "offline message delay")
            if stamp is None:
                stamp = self.now
                delay = stanza.addElement((DELAY, "delay"))
                delay["from"] = domain
                delay["stamp"] = stamp_text(stamp)
            out.append((stamp, to_text(stanza, CLIENT)))
        return out

    def _archive(self, container: domish.Element, owner: str) -> list[ArchiveEntry]:
        from tigasepy.extensions.mam import parse_stamp, stanza_id, strip_stanza_ids

        out = []
        for result in _children(container):
            if result.uri not in MAM_NAMESPACES or result.name != "result":
                self._ignore_element(result)
                continue
            uid = result.getAttribute("id")
            if not uid:
                raise PortabilityError("archive <result/> without id=")
            forwarded = next(result.elements(FORWARD, "forwarded"), None)
            message = next(forwarded.elements(CLIENT, "message"), None) if forwarded is not None else None
            delay = next(forwarded.elements(DELAY, "delay"), None) if forwarded is not None else None
            if message is None or delay is None:
                raise PortabilityError(f"archive result {uid}: needs <forwarded/> with <delay/> and <message/>")
            stamp = _stamp(parse_stamp, delay.getAttribute("stamp"), f"archive result {uid}")
            stanza = _neutral(message)
            strip_stanza_ids(stanza, owner)
            sender = _jid(stanza.getAttribute("from") or owner, f"archive result {uid}")
            recipient = _jid(stanza.getAttribute("to") or owner, f"archive result {uid}")
            outgoing = sender.partition("/")[0] == owner
            if not outgoing:
                stanza.addChild(stanza_id(owner, uid))   # as the archive stamps what it receives
            out.append(ArchiveEntry(id=uid, with_jid=recipient if outgoing else sender, stamp=stamp,
                                    xml=to_text(stanza, CLIENT)))
        return out

    def _privacy(self, query: domish.Element) -> PrivacySettings:
        lists: dict[str, tuple[PrivacyItem, ...]] = {}
        default = None
        for child in _children(query):
            if child.uri != PRIVACY:
                self._ignore_element(child)
            elif child.name == "default":
                default = child.getAttribute("name") or None   # ejabberd writes <default/> for none
            elif child.name == "list":
                name = child.getAttribute("name")
                if not name:
                    raise PortabilityError("privacy <list/> without name=")
                lists[name] = tuple(sorted((self._privacy_item(name, item) for item in
                                            child.elements(PRIVACY, "item")), key=lambda i: i.order))
            elif child.name != "active":
                self._ignore_element(child)
        if default is not None and default not in lists:
            raise PortabilityError(f"privacy default list {default!r} is not among the lists")
        return PrivacySettings(lists=lists, default=default)

    def _privacy_item(self, list_name: str, item: domish.Element) -> PrivacyItem:
        where = f"privacy list {list_name!r}"
        action = item.getAttribute("action")
        order = item.getAttribute("order") or ""
        if action not in ("allow", "deny") or not order.isdigit() or int(order) >= 2 ** 32:
            raise PortabilityError(f"{where}: an item needs action allow/deny and order 0..4294967295")
        kind = item.getAttribute("type")
        value = item.getAttribute("value")
        if kind is None:
            value = None
        elif kind == "jid":
            value = _jid(value, where)
        elif kind == "subscription":
            if value not in ("none", "to", "from", "both"):
                raise PortabilityError(f"{where}: subscription value {value!r}")
        elif kind != "group" or value is None:
            raise PortabilityError(f"{where}: item type={kind!r} value={value!r}")
        kinds = frozenset(c.name for c in _children(item) if c.uri == PRIVACY and c.name in PRIVACY_KINDS)
        return PrivacyItem(order=int(order), action=action, type=kind, value=value, kinds=kinds)


def _b64(text: str, mechanism: str, name: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PortabilityError(f"{mechanism}: <{name}/> is not base64") from None


def _jid(text: str | None, where: str) -> str:
    try:
        parsed = parse_jid(text)
    except InvalidFormat:
        parsed = None
    if parsed is None:
        raise PortabilityError(f"{where}: {text!r} is not a JID")
    return parsed.full()


def _stamp(parse: Callable[[str], float], text: str | None, where: str) -> float:
    try:
        return parse(text or "")
    except ValueError:
        raise PortabilityError(f"{where}: stamp {text!r} is not a XEP-0082 DateTime") from None


def stamp_text(seconds: float) -> str:
    """XEP-0082 DateTime in UTC with microseconds (exports lose no precision)."""
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _strip(stanza: domish.Element, uri: str, name: str) -> None:
    for child in list(stanza.elements(uri, name)):
        stanza.children.remove(child)


def _with_pending(roster: list[RosterItem], requesters: Iterable[str]) -> list[RosterItem]:
    items = {item.contact: item for item in roster}
    for contact in requesters:
        item = items.get(contact)
        items[contact] = (replace(item, pending_in=True) if item is not None
                          else RosterItem(contact=contact, pending_in=True, in_roster=False))
    return list(items.values())


def load_import(paths: Sequence[Path | str], domains: Sequence[str] | None = None,
                now: float | None = None, pep_max_items: int = PEP_MAX_ITEMS) -> ImportReport:
    """Read XEP-0227 files (each with ``<server-data/>`` at its root) into ``UserData``.

    Args:
        paths: the files; XIncludes are followed (relative paths inside each file's folder).
        domains: only ``<host/>`` elements of these domains (all when None).
        now: the stamp for offline messages that carry no delay of their host.
        pep_max_items: ``[extensions.pep] max_items`` (what a node's ``max`` means).

    Raises:
        PortabilityError: a file is unreadable or invalid, or an account appears twice.
    """
    report = ImportReport()
    reader = _Reader(report, time.time() if now is None else now, domains, pep_max_items)
    for path in paths:
        reader.read(Path(path))
    return report


def derive_credentials(user: UserData, hashes: Sequence[str], iterations: int) -> None:
    """Replace a plaintext ``password`` by SCRAM keys (``hashes``, ``iterations``); forget it.

    Raises:
        PortabilityError: the password cannot be used (empty, prohibited characters).
    """
    if user.password is None:
        return
    password, user.password = user.password, None
    try:
        user.credentials = make_credentials(password, hashes, iterations)
    except InvalidPassword as e:
        raise PortabilityError(f"user {user.jid}: {e}") from None


# --- the stores -----------------------------------------------------------------------------

def read_user_txn(cursor: Any, engine: DatabaseEngine, jid: str) -> UserData:
    """Everything the stores hold for the account ``jid`` (one transaction: a consistent copy)."""
    user = UserData(jid=jid)
    for hash_name in HASHES:
        credential = sql_accounts.get_credential_txn(cursor, engine, jid, hash_name)
        if credential is not None:
            user.credentials.append(credential)
    user.roster = sql_roster.get_items_txn(cursor, engine, jid)
    user.vcard = sql_vcard.get_vcard_txn(cursor, engine, jid)
    for namespace in sql_private.namespaces_txn(cursor, engine, jid):
        xml = sql_private.get_private_txn(cursor, engine, jid, namespace)
        if xml:
            user.private[namespace] = xml
    user.offline = [(m.stamp, m.xml) for m in sql_offline.fetch_txn(cursor, engine, jid)]
    after = None
    while True:
        page = sql_archive.query_txn(cursor, engine, jid, ArchiveQuery(after_seq=after), _ARCHIVE_PAGE)
        user.archive.extend(ArchiveEntry(id=m.id, with_jid=m.with_jid, stamp=m.stamp, xml=m.xml) for m in page)
        if len(page) < _ARCHIVE_PAGE:
            break
        after = page[-1].seq
    user.privacy = sql_privacy.get_all_txn(cursor, engine, jid)
    for node in sql_pep.nodes_txn(cursor, engine, jid):
        config = sql_pep.get_node_txn(cursor, engine, jid, node) or {}
        user.pep[node] = (config, list(reversed(sql_pep.items_txn(cursor, engine, jid, node, None))))
    return user


#: What ``import_user_txn`` does with an account that exists.
SKIP, REPLACE, REFUSE = "skip", "replace", "refuse"


def import_user_txn(cursor: Any, engine: DatabaseEngine, user: UserData, existing: str,
                    created: float) -> str:
    """Store ``user`` (credentials already derived) in one transaction.

    Args:
        existing: for an account that exists: ``SKIP`` leaves it as it is, ``REPLACE``
            deletes it with all its data first, ``REFUSE`` raises ``AccountExists``.
        created: the account's creation stamp.

    Returns:
        ``"imported"``, ``"replaced"`` or ``"skipped"``.
    """
    if user.password is not None:
        raise ValueError("derive_credentials first: passwords are never stored")
    jid = user.jid
    outcome = "imported"
    if sql_accounts.account_exists_txn(cursor, engine, jid):
        if existing == SKIP:
            return "skipped"
        if existing != REPLACE:
            raise AccountExists(jid)
        delete_account_and_data_txn(cursor, engine, jid)
        outcome = "replaced"
    sql_accounts.create_account_txn(cursor, engine, jid, user.credentials, created)
    for item in user.roster:
        sql_roster.put_item_txn(cursor, engine, jid, item)
    if user.vcard is not None:
        sql_vcard.set_vcard_txn(cursor, engine, jid, user.vcard)
    if user.private:
        sql_private.set_private_txn(cursor, engine, jid, user.private)
    for stamp, xml in user.offline:
        sql_offline.append_txn(cursor, engine, jid, xml, stamp)
    known = sql_archive.positions_txn(cursor, engine, jid, [m.id for m in user.archive]) if user.archive else {}
    for message in user.archive:
        if message.id not in known:
            sql_archive.append_txn(cursor, engine, jid, message.id, message.with_jid, message.stamp, message.xml)
            known[message.id] = 0
    for name, items in user.privacy.lists.items():
        sql_privacy.put_list_txn(cursor, engine, jid, name, items, make_default=name == user.privacy.default)
    if user.pep:
        from tigasepy.extensions.pep_rules import max_items

        for node, (config, pep_items) in user.pep.items():
            sql_pep.put_node_txn(cursor, engine, jid, node, config)
            for item in pep_items:                 # oldest first: the last one is the newest
                sql_pep.publish_txn(cursor, engine, jid, node, item, max_items(config))
    return outcome


# --- writing exports ------------------------------------------------------------------------

def _element(uri: str, name: str, attrs: dict[str, str] | None = None, text: str | None = None) -> domish.Element:
    element = domish.Element((uri, name))
    for key, value in (attrs or {}).items():
        element[key] = value
    if text is not None:
        element.addContent(text)
    return element


def user_element(user: UserData) -> domish.Element:
    """``<user name/>`` (``urn:xmpp:pie:0``) with everything ``user`` holds."""
    from tigasepy.extensions.mam import strip_stanza_ids

    out = _element(PIE, "user", {"name": user.name})
    for credential in user.credentials:
        scram = out.addChild(_element(PIE_SCRAM, "scram-credentials",
                                      {"mechanism": f"SCRAM-{credential.hash_name}"}))
        scram.addChild(_element(PIE_SCRAM, "iter-count", text=str(credential.iterations)))
        for name, value in (("salt", credential.salt), ("server-key", credential.server_key),
                            ("stored-key", credential.stored_key)):
            scram.addChild(_element(PIE_SCRAM, name, text=base64.b64encode(value).decode("ascii")))
    listed = [item for item in user.roster if item.in_roster]
    if listed:
        query = out.addChild(_element(ROSTER, "query"))
        for item in listed:
            attrs = {"jid": item.contact, "subscription": item.subscription}
            if item.name:
                attrs["name"] = item.name
            if item.ask:
                attrs["ask"] = "subscribe"
            if item.approved:
                attrs["approved"] = "true"
            element = query.addChild(_element(ROSTER, "item", attrs))
            for group in item.groups:
                element.addChild(_element(ROSTER, "group", text=group))
    for item in user.roster:
        if item.pending_in:
            out.addChild(_element(CLIENT, "presence", {"type": "subscribe", "from": item.contact,
                                                       "to": user.jid}))
    if user.vcard is not None:
        out.addChild(parse_stanza(user.vcard.xml))
    if user.private:
        query = out.addChild(_element(PRIVATE, "query"))
        for namespace in sorted(user.private):
            for child in _fragments(user.private[namespace]):
                query.addChild(child)
    if user.offline:
        container = out.addChild(_element(PIE, "offline-messages"))
        for stamp, xml in user.offline:
            stanza = parse_stanza(xml)
            if not any(d.getAttribute("from") == user.host for d in stanza.elements(DELAY, "delay")):
                delay = stanza.addElement((DELAY, "delay"))
                delay["from"] = user.host
                delay["stamp"] = stamp_text(stamp)
                delay.addContent("Offline Storage")
            container.addChild(_qualified(stanza))
    if user.privacy.lists:
        query = out.addChild(_element(PRIVACY, "query"))
        if user.privacy.default:
            query.addChild(_element(PRIVACY, "default", {"name": user.privacy.default}))
        for name, items in user.privacy.lists.items():
            element = query.addChild(_element(PRIVACY, "list", {"name": name}))
            for item in items:
                attrs = {"action": item.action, "order": str(item.order)}
                if item.type is not None:
                    attrs["type"] = item.type
                    attrs["value"] = item.value or ""
                child = element.addChild(_element(PRIVACY, "item", attrs))
                for kind in PRIVACY_KINDS:
                    if kind in item.kinds:
                        child.addChild(_element(PRIVACY, kind))
    if user.pep:
        from tigasepy.extensions.pep_rules import config_form

        owner = out.addChild(_element(PUBSUB_OWNER, "pubsub"))
        for node, (config, _items) in sorted(user.pep.items()):
            owner.addChild(_element(PUBSUB_OWNER, "configure", {"node": node})).addChild(config_form(node, config))
        published = out.addChild(_element(PUBSUB, "pubsub"))
        for node, (_config, pep_items) in sorted(user.pep.items()):
            container = published.addChild(_element(PUBSUB, "items", {"node": node}))
            for item in pep_items:
                container.addChild(_element(PUBSUB, "item", {"id": item.item_id})).addChild(parse_stanza(item.xml))
    if user.archive:
        archive = out.addChild(_element(PIE_MAM, "archive"))
        for message in user.archive:
            result = archive.addChild(_element(MAM, "result", {"id": message.id}))
            forwarded = result.addChild(_element(FORWARD, "forwarded"))
            forwarded.addChild(_element(DELAY, "delay", {"stamp": stamp_text(message.stamp)}))
            stanza = parse_stanza(message.xml)
            strip_stanza_ids(stanza, user.jid)     # the result's id says it
            forwarded.addChild(_qualified(stanza))
    return out


def _fragments(xml: str) -> list[domish.Element]:
    """The elements of a stored private-storage fragment (one or more serialized elements)."""
    wrapper = parse_stanza(f"<query xmlns='{PRIVATE}'>{xml}</query>")
    return _children(wrapper)


def _open_private(path: Path) -> TextIO:
    """``path`` created for writing, readable by its owner only (the XEP's security advice)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PortabilityError(f"{path} exists; remove it or choose another name") from None
    except OSError as e:
        raise PortabilityError(f"cannot create {path}: {e.strerror or e}") from None
    return os.fdopen(fd, "w", encoding="utf-8")


_HEADER = "<?xml version='1.0' encoding='UTF-8'?>\n"


class ExportWriter:
    """Writes an export as one file or as the XEP-0227 section 5.1 directory layout.

    One file: ``<server-data>`` with every ``<host>`` and ``<user>`` inline. A directory
    (``directory=True``): ``server-data.xml`` including ``HOST.xml`` per host, each
    including ``HOST/USER.xml`` per user. Files are created owner-only (0600), folders 0700;
    an existing file is never overwritten.

    Use: ``begin_host(domain)``, ``write_user(UserData)`` for each user, ``end_host()``,
    ``close()``.
    """

    def __init__(self, path: Path | str, directory: bool) -> None:
        self.path = Path(path)
        self.directory = directory
        self.users = 0
        self._host: str | None = None
        self._host_file: TextIO | None = None
        if directory:
            try:
                self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as e:
                raise PortabilityError(f"cannot create {self.path}: {e.strerror or e}") from None
            self.main_path = self.path / "server-data.xml"
        else:
            self.main_path = self.path
        self._main = _open_private(self.main_path)
        self._main.write(_HEADER)
        if directory:
            self._main.write(f"<server-data xmlns='{PIE}' xmlns:xi='{XINCLUDE}'>\n")
        else:
            self._main.write(f"<server-data xmlns='{PIE}'>\n")

    def begin_host(self, domain: str) -> None:
        self._host = domain
        attr = _escape(domain, True)
        if self.directory:
            (self.path / domain).mkdir(mode=0o700, exist_ok=True)
            self._main.write(f"  <xi:include href='{_escape(domain + '.xml', True)}'/>\n")
            self._host_file = _open_private(self.path / f"{domain}.xml")
            self._host_file.write(_HEADER + f"<host xmlns='{PIE}' xmlns:xi='{XINCLUDE}' jid='{attr}'>\n")
        else:
            self._main.write(f"  <host jid='{attr}'>\n")

    def write_user(self, user: UserData) -> None:
        try:
            element = user_element(user)
        except StreamParseError as e:
            raise PortabilityError(f"user {user.jid}: stored XML that does not parse ({e.text or e.condition})") \
                from None
        if self.directory:
            assert self._host_file is not None and self._host is not None
            name = f"{user.name}.xml"
            href = f"{self._host}/{name}"
            with _open_private(self.path / self._host / name) as f:
                f.write(_HEADER + to_text(element) + "\n")
            self._host_file.write(f"  <xi:include href='{_escape(href, True)}'/>\n")
        else:
            self._main.write("    " + to_text(element, PIE) + "\n")
        self.users += 1

    def end_host(self) -> None:
        if self.directory:
            assert self._host_file is not None
            self._host_file.write("</host>\n")
            self._host_file.close()
            self._host_file = None
        else:
            self._main.write("  </host>\n")
        self._host = None

    def close(self) -> None:
        self._main.write("</server-data>\n")
        self._main.close()

    def abandon(self) -> None:
        """Close and delete the main file of an export that failed half way (one-file layout)."""
        self._main.close()
        try:
            self.main_path.unlink()
        except OSError:
            pass
