"""Message Archive Management for accounts (XEP-0313 1.1.3, urn:xmpp:mam:2).

Archiving: chat and normal messages with a ``<body/>`` (or a XEP-0334 ``<store/>``
hint; never with ``<no-store/>`` or ``<no-permanent-store/>``) are kept in the
sender's archive when a local client sends them and in the recipient's archive
when they are delivered to a local account (written to a session or kept
offline), each under a fresh, unpredictable UID. The copy delivered to the
recipient carries ``<stanza-id xmlns='urn:xmpp:sid:0' by='user@domain' id='UID'/>``
(XEP-0359); a ``stanza-id`` claiming to be by that account that came from
anywhere else is removed first, from every message, archived or not (XEP-0359
rule 2). A message an account sends to itself is stored once. Groupchat
messages are not archived.

Preferences (XEP-0441): ``<prefs default='always|never|roster'>`` with
``<always/>`` and ``<never/>`` JID lists, stored per account; a JID in both lists
is never archived. Without preferences the configured ``default`` applies.
Messages of one account are decided and stamped in arrival order even when a
preference lookup waits on storage.

Queries: ``<query xmlns='urn:xmpp:mam:2'>`` (IQ set) to the user's own bare JID,
with an optional XEP-0004 form (``with``, ``start``, ``end``, ``before-id``,
``after-id``, ``ids``) and XEP-0059 paging (``max``, ``after``, ``before`` (empty:
the last page), ``index``), plus ``<flip-page/>``. Results go to the querying
resource as ``<result><forwarded xmlns='urn:xmpp:forward:0'>`` (XEP-0297) with a
``<delay/>``, in archive order, then the IQ result with ``<fin>`` (``complete``,
RSM ``first``/``last``/``count``, ``index`` on ``first``). The form itself (IQ
get), archive ``<metadata/>`` and ``<prefs/>`` are answered too. Another
account's archive is ``forbidden``; a malformed form or paging request is
``bad-request``, an unknown form field ``feature-not-implemented``, an unknown
UID ``item-not-found``.

Retention: ``max_age_days`` (expired messages are purged every
``purge_interval_s`` and never returned meanwhile) and ``max_messages_per_user``
(the oldest go first; an archive may briefly exceed the limit by 1%).

A message delivered again after a resumable session ended unacknowledged
(XEP-0198) keeps the stanza-id it got and is not archived twice.

Writes are asynchronous, in arrival order, and grouped: while one transaction
is in flight the next messages queue and go together in the next one. A query
waits for the writes queued before it, so a delivered message is found by the
next query.
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from twisted.internet import defer, task
from twisted.python.failure import Failure
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.compat import data_form
from tigasepy.config import ConfigError
from tigasepy.extensions.offline import delay_stamp
from tigasepy.interfaces import IExtension, Protocol
from tigasepy.log_level import Logger
from tigasepy.sm.dispatch import as_deferred
from tigasepy.sm.events import (
    HANDLED, PASS, AccountEvent, AccountRemoved, DeliveryEvent, MessageDelivered, MessageFromClient,
    MessageToLocal, REDELIVERED, StanzaEvent, Target,
)
from tigasepy.sm.host import ExtensionHost
from tigasepy.storage.interfaces import ArchivedMessage, ArchivePrefs, ArchiveQuery, IArchiveStore, IRosterStore
from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.jid import InvalidFormat, parse_jid
from tigasepy.xmpp.serialize import to_xml

NS_MAM = "urn:xmpp:mam:2"
NS_MAM_EXTENDED = "urn:xmpp:mam:2#extended"
NS_SID = "urn:xmpp:sid:0"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FORWARD = "urn:xmpp:forward:0"
NS_HINTS = "urn:xmpp:hints"

#: ``StanzaEvent.extra`` key: bare JID of an account -> the UID its archive gave the
#: stanza. Carbons read it to stamp the ``<sent/>`` copies (XEP-0313 section 3.5).
ARCHIVE_IDS = "archive_ids"
_PENDING = "mam:pending"

#: Hook priorities: after the filters, before carbons (-60) and message delivery (-100).
PRIORITY = -50

_MODES = ("always", "never", "roster")
_FORM_FIELDS = ("with", "start", "end", "before-id", "after-id", "ids")
_MAX_IDS = 1000
_MAX_PREFS_JIDS = 1000
_PREFS_CACHE = 4096
_CONTENT = (None, ns.CLIENT, ns.SERVER)


@dataclass(frozen=True)
class MamConfig:
    """``[extensions.mam]``: default policy, retention and page sizes."""

    default: str = "always"
    max_age_days: int = 365
    max_messages_per_user: int = 10000
    default_page_size: int = 50
    max_page_size: int = 250
    purge_interval_s: int = 3600

    def validate(self, path: tuple[str, ...]) -> None:
        """Check the values."""
        if self.default not in _MODES:
            raise ConfigError("must be always, never or roster", path + ("default",))
        for name in ("max_age_days", "max_messages_per_user"):
            if getattr(self, name) < 0:
                raise ConfigError("must be >= 0 (0: no limit)", path + (name,))
        if self.max_page_size < 1:
            raise ConfigError("must be >= 1", path + ("max_page_size",))
        if not 1 <= self.default_page_size <= self.max_page_size:
            raise ConfigError("must be between 1 and max_page_size", path + ("default_page_size",))
        if self.purge_interval_s < 1:
            raise ConfigError("must be >= 1", path + ("purge_interval_s",))


def archivable(stanza: domish.Element, kind: str) -> bool:
    """XEP-0313 section 7.1.1 / XEP-0334: chat or normal with a body (or a store hint)."""
    if kind not in ("chat", "normal"):
        return False
    body = False
    for child in stanza.elements():
        if child.uri == NS_HINTS:
            if child.name in ("no-store", "no-permanent-store"):
                return False
            if child.name == "store":
                body = True
        elif child.name == "body" and child.uri in _CONTENT:
            body = True
    return body


def strip_stanza_ids(stanza: domish.Element, by: str) -> None:
    """Remove every ``<stanza-id/>`` child claiming to be assigned by ``by`` (XEP-0359 rule 2)."""
    doomed = []
    for child in stanza.children:
        if type(child) is str or child.uri != NS_SID or child.name != "stanza-id":
            continue
        claimed = child.getAttribute("by")
        if claimed == by:
            doomed.append(child)
            continue
        try:
            jid = parse_jid(claimed)
        except InvalidFormat:
            continue
        if jid is not None and jid.full() == by:
            doomed.append(child)
    for child in doomed:
        stanza.children.remove(child)


def stanza_id(by: str, id_: str) -> domish.Element:
    """A ``<stanza-id xmlns='urn:xmpp:sid:0'/>`` element."""
    element = domish.Element((NS_SID, "stanza-id"))
    element["by"] = by
    element["id"] = id_
    return element


def parse_stamp(text: str) -> float:
    """A XEP-0082 DateTime (with a time zone) as seconds since the epoch.

    Raises:
        ValueError: not such a DateTime.
    """
    text = text.strip()
    if "T" not in text:
        raise ValueError("not a DateTime")
    moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    if moment.tzinfo is None:
        raise ValueError("a DateTime needs a time zone")
    return moment.astimezone(timezone.utc).timestamp()


class _Rules:
    """An account's preferences, compiled for one set lookup per list and message."""

    __slots__ = ("prefs", "always", "never")

    def __init__(self, prefs: ArchivePrefs) -> None:
        self.prefs = prefs
        self.always = frozenset(prefs.always)
        self.never = frozenset(prefs.never)

    @staticmethod
    def listed(jids: frozenset[str], other: str, other_bare: str) -> bool:
        """XEP-0441 JID matching: a listed bare JID matches every resource of it."""
        return other_bare in jids or (other != other_bare and other in jids)


@dataclass
class _Request:
    """A parsed archive query."""

    query: ArchiveQuery
    uids: tuple[str, ...]
    after_id: str | None = None
    before_id: str | None = None
    rsm_after: str | None = None
    rsm_before: str | None = None
    last_page: bool = False
    index: int | None = None
    max: int = 0
    flip: bool = False


class _Sequencer:
    """Runs each account's steps in arrival order, at once while nothing of that account waits.

    A step that waits (returns a Deferred) makes the account's later steps queue
    behind it. When it completes, its caller's callbacks (the rest of the stanza
    pipeline) run, then the queued steps run one by one in a loop, each released to
    its caller before the next starts; a queue of any length costs no stack depth.
    """

    def __init__(self) -> None:
        self._queues: dict[str, collections.deque[tuple[Callable[[], Any], defer.Deferred]]] = {}

    def run(self, owner: str, step: Callable[[], Any]) -> Any:
        queue = self._queues.get(owner)
        if queue is not None:
            out: defer.Deferred = defer.Deferred()
            queue.append((step, out))
            return out
        result = step()
        d = as_deferred(result)
        if d is None:
            return result
        out = defer.Deferred()
        self._queues[owner] = collections.deque()
        d.addBoth(lambda r: self._finish(owner, out, r))
        return out

    def _finish(self, owner: str, out: defer.Deferred, result: Any) -> None:
        _release(out, result)
        queue = self._queues[owner]
        while queue:
            step, out = queue.popleft()
            try:
                result = step()
            except Exception:
                result = Failure()
            d = as_deferred(result)
            if d is not None:
                box: list[Any] = []
                d.addBoth(box.append)
                if not box:                     # still waiting: continue when it completes
                    d.addBoth(lambda _, out=out: self._finish(owner, out, box[0]))
                    return
                result = box[0]
            _release(out, result)
        del self._queues[owner]

    def __len__(self) -> int:
        return len(self._queues)


def _release(out: defer.Deferred, result: Any) -> None:
    if isinstance(result, Failure):
        out.errback(result)
    else:
        out.callback(result)


@implementer(IExtension)
class MessageArchive:
    """Archives one-to-one messages per account and answers XEP-0313 queries."""

    name = "mam"
    protocols = (
        Protocol("XEP-0313", "1.1.3", "complete", "user archives (chat and normal messages); no groupchat"),
        Protocol("XEP-0359", "0.7.0", "complete", "stanza-id on archived messages"),
        Protocol("XEP-0441", "0.2.0", "complete", "archiving preferences"),
        Protocol("XEP-0059", "1.0", "complete", "paging of archive queries"),
        Protocol("XEP-0297", "1.0", "complete", "forwarded archive results"),
        Protocol("XEP-0334", "1.0.0", "partial",
                 "store, no-store and no-permanent-store honoured by archiving (and offline storage)"),
    )
    config_type = MamConfig
    _log = Logger()

    def __init__(self, config: MamConfig | None, host: ExtensionHost) -> None:
        self._config = config or MamConfig()
        self._host = host
        self._store = host.store(IArchiveStore)
        self._roster = host.store(IRosterStore)
        self._prefs: collections.OrderedDict[str, _Rules | None] = collections.OrderedDict()
        self._loading: dict[str, defer.Deferred] = {}
        self._decisions = _Sequencer()
        self._queued: list[tuple[str, str, str, float, str]] = []
        self._inflight: defer.Deferred | None = None
        self._accepted = self._done = 0         # messages queued for archiving / written
        self._waiters: collections.deque[tuple[int, defer.Deferred]] = collections.deque()
        self._since_trim: dict[str, int] = {}
        for feature in (NS_MAM, NS_MAM_EXTENDED, NS_SID):
            host.add_feature(feature, target=Target.BARE)
        targets = (Target.SELF, Target.BARE)
        host.on_iq(NS_MAM, "query", self._query, types=("set",), targets=targets)
        host.on_iq(NS_MAM, "query", self._fields, types=("get",), targets=targets)
        host.on_iq(NS_MAM, "metadata", self._metadata, types=("get",), targets=targets)
        host.on_iq(NS_MAM, "prefs", self._get_prefs, types=("get",), targets=targets)
        host.on_iq(NS_MAM, "prefs", self._set_prefs, types=("set",), targets=targets)
        host.hook(MessageFromClient, self._outgoing, priority=PRIORITY)
        host.hook(MessageToLocal, self._incoming, priority=PRIORITY)
        host.hook(MessageDelivered, self._delivered)
        host.hook(AccountRemoved, self._forget)
        if self._config.max_age_days:
            self._purger = task.LoopingCall(self._purge)
            self._purger.clock = host.clock
            self._purger.start(self._config.purge_interval_s, now=False).addErrback(
                lambda f: self._log.failure("archive purge stopped", f))
            host.on_close(self._stop_purger)

    # -- archiving ----------------------------------------------------------------------
    def _outgoing(self, event: StanzaEvent) -> Any:
        session = event.session
        if session is None:
            return PASS
        owner = session.bare
        stanza = event.stanza
        strip_stanza_ids(stanza, owner)
        if event.target is Target.HOST or not archivable(stanza, event.type):
            return PASS
        other = event.to.full() if event.to is not None else owner
        return self._decisions.run(owner, lambda: self._archive_outgoing(event, owner, other))

    def _archive_outgoing(self, event: StanzaEvent, owner: str, other: str) -> Any:
        def _then(yes: bool) -> Any:
            if yes:
                uid = self._new_uid()
                stanza = event.stanza
                xml = to_xml(stanza if stanza.getAttribute("to") else _with_to(stanza, owner))
                event.extra.setdefault(ARCHIVE_IDS, {})[owner] = uid
                self._append(owner, uid, other, self._host.clock.seconds(), xml)
            return PASS

        return self._then(self._should_archive(owner, other), _then)

    def _incoming(self, event: StanzaEvent) -> Any:
        to = event.to
        if to is None or to.user is None or event.target is Target.HOST:
            return PASS
        if event.extra.get(REDELIVERED):
            return PASS                 # archived and stamped when it first arrived (XEP-0198)
        owner = to.userhost()
        stanza = event.stanza
        strip_stanza_ids(stanza, owner)
        if not archivable(stanza, event.type):
            return PASS
        known = event.extra.get(ARCHIVE_IDS, {}).get(owner)
        if known is not None:            # sent to itself: archived once, on sending
            stanza.addChild(stanza_id(owner, known))
            return PASS
        if event.sender is None:
            return PASS
        other = event.sender.full()
        return self._decisions.run(owner, lambda: self._archive_incoming(event, owner, other))

    def _archive_incoming(self, event: StanzaEvent, owner: str, other: str) -> Any:
        def _then(yes: bool) -> Any:
            if yes:
                uid = self._new_uid()
                stanza = event.stanza
                stanza.addChild(stanza_id(owner, uid))
                event.extra.setdefault(ARCHIVE_IDS, {})[owner] = uid
                event.extra[_PENDING] = (owner, uid, other, self._host.clock.seconds(), to_xml(stanza))
            return PASS

        return self._then(self._should_archive(owner, other), _then)

    def _delivered(self, delivery: DeliveryEvent) -> None:
        pending = delivery.event.extra.pop(_PENDING, None)
        if pending is not None:
            self._append(*pending)

    @staticmethod
    def _then(result: Any, callback: Callable[[Any], Any]) -> Any:
        d = as_deferred(result)
        return callback(result) if d is None else d.addCallback(callback)

    @staticmethod
    def _new_uid() -> str:
        """A random (version 4) UUID, as XEP-0359 recommends; cheaper than ``uuid.uuid4()``."""
        b = bytearray(os.urandom(16))
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        h = b.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def _append(self, owner: str, uid: str, other: str, stamp: float, xml: str) -> None:
        """Queue one message for the archive (group commit).

        Rows are written in arrival order: straight away when no write is in flight,
        else together with everything queued meanwhile, in one transaction, once the
        write in flight is done. Under load a transaction carries many messages.
        """
        self._queued.append((owner, uid, other, stamp, xml))
        self._accepted += 1
        if self._inflight is None:
            self._flush()

    def _flush(self) -> None:
        while self._queued and self._inflight is None:
            rows, self._queued = self._queued, []
            try:
                d = self._inflight = self._store.append_many(rows)
            except Exception:
                d = self._inflight = defer.fail()
            d.addCallbacks(self._written, self._not_written, (rows,), None, (rows,))
            if self._inflight is d:
                return                      # completes later; _written flushes what queued meanwhile

    def _written(self, _count: Any, rows: list[tuple[str, str, str, float, str]]) -> None:
        self._inflight = None
        self._done += len(rows)
        if self._config.max_messages_per_user:
            for owner, added in collections.Counter(row[0] for row in rows).items():
                self._retain(owner, added)
        self._wake()
        self._flush()

    def _not_written(self, failure: Any, rows: list[tuple[str, str, str, float, str]]) -> None:
        self._log.failure("archiving {count} messages failed", failure, count=len(rows))
        self._written(0, rows)

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self._done:
            self._waiters.popleft()[1].callback(None)

    def _retain(self, owner: str, added: int) -> None:
        limit = self._config.max_messages_per_user
        count = self._since_trim.get(owner, 0) + added
        if count < max(1, limit // 100):
            if len(self._since_trim) >= _PREFS_CACHE:
                self._since_trim.clear()
            self._since_trim[owner] = count
            return
        self._since_trim.pop(owner, None)
        d = defer.maybeDeferred(self._store.trim, owner, limit)
        d.addErrback(lambda f: self._log.failure("trimming the archive of {owner} failed", f, owner=owner))

    def _settled(self, owner: str) -> defer.Deferred:
        """Fires once every message queued for archiving so far is written (or failed)."""
        waiter: defer.Deferred = defer.Deferred()
        if self._done >= self._accepted:
            waiter.callback(None)
        else:
            self._waiters.append((self._accepted, waiter))
        return waiter

    def _purge(self) -> Any:
        cutoff = self._cutoff()
        if cutoff is None:
            return None
        d = defer.maybeDeferred(self._store.expire, cutoff)
        d.addErrback(lambda f: self._log.failure("purging expired archived messages failed", f))
        return d

    def _stop_purger(self) -> None:
        if self._purger.running:
            self._purger.stop()

    def _cutoff(self) -> float | None:
        days = self._config.max_age_days
        return self._host.clock.seconds() - days * 86400.0 if days else None

    # -- preferences --------------------------------------------------------------------
    def _should_archive(self, owner: str, other: str) -> Any:
        """True when ``owner``'s preferences archive messages with ``other``; may be a Deferred."""
        if owner in self._prefs:          # (evicted first in, first out)
            return self._decide(owner, self._prefs[owner], other)
        d = self._load_prefs(owner)
        d.addCallback(lambda _prefs: self._decide(owner, self._prefs.get(owner), other))
        d.addErrback(self._undecided, owner)
        return d

    def _undecided(self, failure: Any, owner: str) -> bool:
        self._log.failure("archiving preferences of {owner} unavailable; not archiving", failure, owner=owner)
        return False

    def _load_prefs(self, owner: str) -> defer.Deferred:
        """Fires with ``owner``'s stored preferences (None if never set); one read at a time."""
        waiter: defer.Deferred = defer.Deferred()
        waiting = self._loading.get(owner)
        if waiting is not None:
            waiting.append(waiter)
            return waiter
        self._loading[owner] = [waiter]

        def _loaded(prefs: ArchivePrefs | None) -> None:
            if owner not in self._prefs:          # (a set while loading wins)
                self._remember(owner, prefs)
            for w in self._loading.pop(owner, []):
                w.callback(prefs)

        def _failed(failure: Any) -> None:
            for w in self._loading.pop(owner, []):
                w.errback(failure)

        defer.maybeDeferred(self._store.get_prefs, owner).addCallbacks(_loaded, _failed)
        return waiter

    def _remember(self, owner: str, prefs: ArchivePrefs | None) -> None:
        self._prefs.pop(owner, None)
        self._prefs[owner] = _Rules(prefs) if prefs is not None else None
        while len(self._prefs) > _PREFS_CACHE:
            self._prefs.popitem(last=False)

    def _decide(self, owner: str, rules: _Rules | None, other: str) -> Any:
        other_bare = other.partition("/")[0]
        if rules is not None:
            if rules.listed(rules.never, other, other_bare):
                return False
            if rules.listed(rules.always, other, other_bare):
                return True
        mode = rules.prefs.default if rules is not None else self._config.default
        if mode == "always" or (mode == "roster" and other_bare == owner):
            return True
        if mode == "never":
            return False
        d = defer.maybeDeferred(self._roster.get_item, owner, other_bare)
        return d.addCallback(lambda item: item is not None and item.in_roster)

    def _get_prefs(self, event: StanzaEvent) -> Any:
        owner = self._own_archive(event)

        def _answer(prefs: ArchivePrefs | None) -> domish.Element:
            return _prefs_element(prefs or ArchivePrefs(default=self._config.default))

        if owner in self._prefs:
            rules = self._prefs[owner]
            return _answer(rules.prefs if rules is not None else None)
        return self._load_prefs(owner).addCallback(_answer)

    async def _set_prefs(self, event: StanzaEvent) -> domish.Element:
        owner = self._own_archive(event)
        element = event.stanza.firstChildElement()
        default = element.getAttribute("default")
        if default not in _MODES:
            raise StanzaError("bad-request", "default must be always, never or roster")
        lists: dict[str, list[str]] = {"always": [], "never": []}
        for child in element.elements(NS_MAM):
            if child.name not in lists:
                continue
            for item in child.elements(NS_MAM, "jid"):
                try:
                    jid = parse_jid(str(item).strip())
                except InvalidFormat:
                    jid = None
                if jid is None:
                    raise StanzaError("bad-request", "not a JID in the preferences")
                lists[child.name].append(jid.full())
        always, never = (tuple(dict.fromkeys(lists[name])) for name in ("always", "never"))
        if len(always) > _MAX_PREFS_JIDS or len(never) > _MAX_PREFS_JIDS:
            raise StanzaError("not-acceptable", f"at most {_MAX_PREFS_JIDS} JIDs per list")
        prefs = ArchivePrefs(default=default, always=always, never=never)
        await self._store.set_prefs(owner, prefs)
        self._remember(owner, prefs)
        return _prefs_element(prefs)

    # -- queries ------------------------------------------------------------------------
    def _own_archive(self, event: StanzaEvent) -> str:
        if event.target is not Target.SELF or event.sender is None or event.session is None:
            raise StanzaError("forbidden", "only the account's own archive can be read")
        return event.sender.userhost()

    def _fields(self, event: StanzaEvent) -> domish.Element:
        self._own_archive(event)
        form = data_form.Form("form", formNamespace=NS_MAM)
        form.addField(data_form.Field("jid-single", var="with"))
        for var in ("start", "end", "before-id", "after-id"):
            form.addField(data_form.Field("text-single", var=var))
        form.addField(data_form.Field("list-multi", var="ids"))
        x = form.toElement()
        for field in x.elements(ns.DATA_FORMS, "field"):
            if field.getAttribute("var") == "ids":
                validate = field.addElement(("http://jabber.org/protocol/xdata-validate", "validate"))
                validate["datatype"] = "xs:string"
                validate.addElement("open")
        query = domish.Element((NS_MAM, "query"))
        query.addChild(x)
        return query

    async def _metadata(self, event: StanzaEvent) -> domish.Element:
        owner = self._own_archive(event)
        await self._settled(owner)
        cutoff = self._cutoff()
        if cutoff is None:
            bounds = await self._store.bounds(owner)
        else:
            recent = ArchiveQuery(start=cutoff)
            first = await self._store.query(owner, recent, 1)
            last = await self._store.query(owner, recent, 1, newest_first=True)
            bounds = (first[0], last[0]) if first and last else None
        metadata = domish.Element((NS_MAM, "metadata"))
        if bounds is not None:
            for name, message in zip(("start", "end"), bounds):
                element = metadata.addElement(name)
                element["id"] = message.id
                element["timestamp"] = _timestamp(message.stamp)
        return metadata

    async def _query(self, event: StanzaEvent) -> Any:
        owner = self._own_archive(event)
        query = event.stanza.firstChildElement()
        if query.getAttribute("node"):
            raise StanzaError("item-not-found", "this archive has no nodes")
        request = self._parse(query)
        await self._settled(owner)
        found: dict[str, int] = {}
        if request.uids:
            found = await self._store.positions(owner, list(request.uids))
            missing = [u for u in request.uids if u not in found]
            if missing:
                raise StanzaError("item-not-found", "no such message in the archive")
            request.query = _narrowed(request, found)
        full = request.query
        page_query = full
        if request.rsm_after is not None:
            page_query = _replace(page_query, after_seq=_max(page_query.after_seq, found[request.rsm_after]))
        if request.rsm_before is not None:
            page_query = _replace(page_query, before_seq=_min(page_query.before_seq, found[request.rsm_before]))
        count = await self._store.count(owner, full)
        limit = request.max
        if limit == 0:
            page: list[ArchivedMessage] = []
            complete = count == 0
        elif request.last_page or request.rsm_before is not None:
            got = await self._store.query(owner, page_query, limit + 1, newest_first=True)
            complete = len(got) <= limit
            page = list(reversed(got[:limit]))
        else:
            got = await self._store.query(owner, page_query, limit + 1, offset=request.index or 0)
            complete = len(got) <= limit
            page = got[:limit]
        index = None
        if page:
            index = await self._store.count(owner, _replace(full, before_seq=_min(full.before_seq, page[0].seq)))
        session = event.session
        if self._host.session(session.full) is not session:
            return HANDLED                  # the querying session ended meanwhile
        queryid = query.getAttribute("queryid")
        for message in (reversed(page) if request.flip else page):
            session.send(self._result(owner, session.full, queryid, message))
        return _fin(page, count, index, complete)

    def _parse(self, query: domish.Element) -> _Request:
        fields: dict[str, list[str]] = {}
        rsm = None
        flip = False
        for child in query.elements():
            if child.uri == ns.DATA_FORMS and child.name == "x":
                fields = _form_fields(child)
            elif child.uri == NS_RSM and child.name == "set":
                rsm = child
            elif child.uri == NS_MAM and child.name == "flip-page":
                flip = True
        with_jid = None
        if fields.get("with"):
            try:
                jid = parse_jid(_single(fields, "with"))
            except InvalidFormat:
                jid = None
            if jid is None:
                raise StanzaError("bad-request", "'with' is not a JID")
            with_jid = jid.full()
        times: dict[str, float] = {}
        for name in ("start", "end"):
            if fields.get(name):
                try:
                    times[name] = parse_stamp(_single(fields, name))
                except ValueError:
                    raise StanzaError("bad-request", f"'{name}' is not a XEP-0082 DateTime") from None
        cutoff = self._cutoff()
        if cutoff is not None:
            times["start"] = max(times.get("start", cutoff), cutoff)
        after_id = _single(fields, "after-id") if fields.get("after-id") else None
        before_id = _single(fields, "before-id") if fields.get("before-id") else None
        ids = None
        if "ids" in fields:
            ids = tuple(dict.fromkeys(v for v in fields["ids"] if v))
            if len(ids) > _MAX_IDS:
                raise StanzaError("not-acceptable", f"at most {_MAX_IDS} ids per query")
        request = _Request(query=ArchiveQuery(with_jid=with_jid, start=times.get("start"), end=times.get("end"),
                                              ids=ids),
                           uids=(), after_id=after_id, before_id=before_id, flip=flip,
                           max=self._config.default_page_size)
        if rsm is not None:
            self._parse_rsm(rsm, request)
        uids = [u for u in (after_id, before_id, request.rsm_after, request.rsm_before) if u]
        request.uids = tuple(dict.fromkeys(uids + list(ids or ())))
        return request

    def _parse_rsm(self, rsm: domish.Element, request: _Request) -> None:
        seen: dict[str, domish.Element] = {}
        for child in rsm.elements(NS_RSM):
            if child.name in seen:
                raise StanzaError("bad-request", f"more than one <{child.name}/> in <set/>")
            seen[child.name] = child
        if "max" in seen:
            request.max = min(_natural(seen["max"], "max"), self._config.max_page_size)
        if "after" in seen:
            request.rsm_after = str(seen["after"]).strip()
            if not request.rsm_after:
                raise StanzaError("bad-request", "<after/> needs an archive id")
        if "before" in seen:
            before = str(seen["before"]).strip()
            if before:
                request.rsm_before = before
            else:
                request.last_page = True
        if "index" in seen:
            request.index = _natural(seen["index"], "index")
        if sum(1 for name in ("after", "before", "index") if name in seen) > 1:
            raise StanzaError("bad-request", "use one of <after/>, <before/> and <index/>")

    def _result(self, owner: str, to: str, queryid: str | None, message: ArchivedMessage) -> domish.Element:
        wrapper = domish.Element((None, "message"))
        wrapper["to"] = to
        wrapper["from"] = owner
        result = wrapper.addElement((NS_MAM, "result"))
        if queryid is not None:
            result["queryid"] = queryid
        result["id"] = message.id
        forwarded = result.addElement((NS_FORWARD, "forwarded"))
        delay = forwarded.addElement((ns.DELAY, "delay"))
        delay["stamp"] = _timestamp(message.stamp)
        try:
            forwarded.addChild(parse_stanza(message.xml))
        except Exception:
            self._log.warn("archived message {id} of {owner} is unreadable; sent without it",
                           id=message.id, owner=owner)
        return wrapper

    # -- account removal ----------------------------------------------------------------
    async def _forget(self, event: AccountEvent) -> None:
        self._prefs.pop(event.jid, None)
        await self._settled(event.jid)
        await self._store.remove_owner(event.jid)


def _with_to(stanza: domish.Element, to: str) -> domish.Element:
    element = domish.Element((stanza.uri, stanza.name), stanza.defaultUri, dict(stanza.attributes))
    element.children = list(stanza.children)
    element["to"] = to
    return element


def _timestamp(seconds: float) -> str:
    return delay_stamp(seconds)


def _replace(query: ArchiveQuery, **changes: Any) -> ArchiveQuery:
    values = {name: getattr(query, name) for name in ("with_jid", "start", "end", "after_seq", "before_seq", "ids")}
    values.update(changes)
    return ArchiveQuery(**values)


def _max(a: int | None, b: int) -> int:
    return b if a is None else max(a, b)


def _min(a: int | None, b: int) -> int:
    return b if a is None else min(a, b)


def _narrowed(request: _Request, found: dict[str, int]) -> ArchiveQuery:
    query = request.query
    if request.after_id is not None:
        query = _replace(query, after_seq=found[request.after_id])
    if request.before_id is not None:
        query = _replace(query, before_seq=found[request.before_id])
    return query


def _natural(element: domish.Element, name: str) -> int:
    text = str(element).strip()
    if not text.isdigit():
        raise StanzaError("bad-request", f"<{name}/> must be a non-negative integer")
    return int(text)


def _single(fields: dict[str, list[str]], name: str) -> str:
    values = fields[name]
    if len(values) != 1:
        raise StanzaError("bad-request", f"'{name}' takes one value")
    return values[0]


def _form_fields(x: domish.Element) -> dict[str, list[str]]:
    """The fields of a submitted MAM query form: var -> values (empty values dropped)."""
    try:
        form = data_form.Form.fromElement(x)
    except Exception:
        raise StanzaError("bad-request", "malformed data form") from None
    if form.formType != "submit":
        raise StanzaError("bad-request", "the query form must be of type 'submit'")
    if form.formNamespace != NS_MAM:
        raise StanzaError("bad-request", f"FORM_TYPE must be {NS_MAM}")
    fields: dict[str, list[str]] = {}
    for var, field in form.fields.items():
        if var not in _FORM_FIELDS:
            raise StanzaError("feature-not-implemented", f"unknown field {var!r}")
        values = [str(v).strip() for v in field.values if v is not None]
        values = [v for v in values if v]
        if values:
            fields[var] = values
    return fields


def _fin(page: list[ArchivedMessage], count: int, index: int | None, complete: bool) -> domish.Element:
    fin = domish.Element((NS_MAM, "fin"))
    if complete:
        fin["complete"] = "true"
    rsm = fin.addElement((NS_RSM, "set"))
    if page:
        first = rsm.addElement("first", content=page[0].id)
        if index is not None:
            first["index"] = str(index)
        rsm.addElement("last", content=page[-1].id)
    rsm.addElement("count", content=str(count))
    return fin


def _prefs_element(prefs: ArchivePrefs) -> domish.Element:
    element = domish.Element((NS_MAM, "prefs"))
    element["default"] = prefs.default
    for name, jids in (("always", prefs.always), ("never", prefs.never)):
        listed = element.addElement(name)
        for jid in jids:
            listed.addElement("jid", content=jid)
    return element
