"""Room semantics of Multi-User Chat (XEP-0045): occupants, roles, affiliations, config.

A ``Room`` holds state and turns incoming stanzas into outgoing ones through ``send``;
it does no I/O of its own. The permission rules are plain functions (``default_role``,
``may_kick``, ``may_set_affiliation``) so that tests can check them alone.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

from twisted.words.xish import domish

from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.stanza import copy_element

NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_MUC_ADMIN = "http://jabber.org/protocol/muc#admin"
NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"
NS_ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
NS_ROOMINFO = "http://jabber.org/protocol/muc#roominfo"
NS_SID = "urn:xmpp:sid:0"
NS_DELAY = "urn:xmpp:delay"

AFFILIATIONS = ("owner", "admin", "member", "none", "outcast")
ROLES = ("moderator", "participant", "visitor", "none")
_AFF_RANK = {"outcast": -1, "none": 0, "member": 1, "admin": 2, "owner": 3}
_ROLE_RANK = {"none": 0, "visitor": 1, "participant": 2, "moderator": 3}


@dataclass
class RoomConfig:
    """The muc#roomconfig options tigasepy implements (names without the prefix)."""

    roomname: str = ""
    roomdesc: str = ""
    persistentroom: bool = False
    publicroom: bool = True
    membersonly: bool = False
    moderatedroom: bool = False
    passwordprotectedroom: bool = False
    roomsecret: str = ""
    maxusers: int = 0                       # 0: the service's limit
    whois: str = "moderators"               # moderators (semi-anonymous) | anyone (non-anonymous)
    changesubject: bool = False             # participants may change the subject
    allowpm: str = "anyone"                 # anyone | participants | moderators | none
    allowinvites: bool = False
    enablelogging: bool = False             # archive groupchat messages (XEP-0313 on the room)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RoomConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Occupant:
    nick: str
    jid: str                 # the real full JID
    role: str
    presence: domish.Element | None = None

    @property
    def bare(self) -> str:
        return self.jid.split("/", 1)[0]


@dataclass
class HistoryEntry:
    stamp: float
    nick: str
    jid: str
    stanza: domish.Element
    size: int


@dataclass
class Limits:
    max_occupants: int = 200
    history_size: int = 20
    message_size: int = 16384


def default_role(affiliation: str, config: RoomConfig) -> str:
    """The role an occupant gets on joining (XEP-0045 section 5.1.2)."""
    if affiliation in ("owner", "admin"):
        return "moderator"
    if affiliation == "member" or not config.moderatedroom:
        return "participant"
    return "visitor"


def may_kick(actor_role: str, actor_aff: str, target_aff: str) -> bool:
    """A moderator may kick (role none) or revoke voice of anyone not above its affiliation
    (never an owner or admin, section 8.2)."""
    return actor_role == "moderator" and _AFF_RANK[target_aff] < _AFF_RANK["admin"] or (
        actor_aff == "owner" and target_aff != "owner")


def may_set_affiliation(actor_aff: str, old: str, new: str) -> bool:
    """Admins change affiliations among none/member/outcast; owners may change anything
    (sections 9 and 10)."""
    if actor_aff == "owner":
        return True
    if actor_aff == "admin":
        return old in ("none", "member", "outcast") and new in ("none", "member", "outcast")
    return False


def may_send_pm(config: RoomConfig, role: str) -> bool:
    if config.allowpm == "none":
        return False
    if config.allowpm == "moderators":
        return role == "moderator"
    if config.allowpm == "participants":
        return role in ("participant", "moderator")
    return True


def history_to_send(history: list[HistoryEntry], history_el: domish.Element | None,
                    now: float) -> list[HistoryEntry]:
    """The history entries a joining occupant asked for (section 7.2.13): maxstanzas,
    maxchars, seconds and since, all applying together."""
    if history_el is None:
        return list(history)
    selected = list(history)

    def num(name: str) -> int | None:
        value = history_el.getAttribute(name)
        if value is None:
            return None
        try:
            return max(0, int(value))
        except ValueError:
            raise StanzaError("bad-request", f"'{name}' is not a number") from None

    seconds = num("seconds")
    if seconds is not None:
        selected = [e for e in selected if e.stamp >= now - seconds]
    since = history_el.getAttribute("since")
    if since:
        from tigasepy.extensions.mam import parse_stamp
        try:
            start = parse_stamp(since)
        except ValueError:
            raise StanzaError("bad-request", "'since' is not a DateTime") from None
        selected = [e for e in selected if e.stamp >= start]
    maxstanzas = num("maxstanzas")
    if maxstanzas is not None:
        selected = selected[len(selected) - maxstanzas:] if maxstanzas else []
    maxchars = num("maxchars")
    if maxchars is not None:
        kept: list[HistoryEntry] = []
        total = 0
        for entry in reversed(selected):
            total += entry.size
            if total > maxchars:
                break
            kept.append(entry)
        selected = list(reversed(kept))
    return selected


def stamp_text(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}Z"


class Room:
    """One room: ``jid`` is its bare JID; ``send`` routes an outgoing stanza."""

    def __init__(self, jid: str, send: Callable[[domish.Element], None], limits: Limits | None = None,
                 config: RoomConfig | None = None, affiliations: dict[str, str] | None = None,
                 archive: Callable[[str, str, float, domish.Element], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.jid = jid
        self.config = config or RoomConfig()
        self.affiliations: dict[str, str] = dict(affiliations or {})
        self.occupants: dict[str, Occupant] = {}        # nick -> occupant
        self.by_jid: dict[str, Occupant] = {}           # real full JID -> occupant
        self.limits = limits or Limits()
        self.history: deque[HistoryEntry] = deque(maxlen=max(1, self.limits.history_size))
        self.subject: domish.Element | None = None
        self.subject_nick = ""
        #: A new room stays locked until its owner submits the config (instant room: an
        #: empty form); others get item-not-found meanwhile (section 10.1.1).
        self.locked = False
        self._send = send
        self._archive = archive
        self._clock = clock
        #: Called when the room's stored state (config, affiliations) changed.
        self.on_changed: Callable[[Room], None] = lambda room: None
        #: Called when the room is destroyed or becomes empty and is not persistent.
        self.on_gone: Callable[[Room], None] = lambda room: None

    # -- queries ------------------------------------------------------------------------
    def affiliation(self, jid: str) -> str:
        return self.affiliations.get(jid.split("/", 1)[0], "none")

    def occupant_jid(self, nick: str) -> str:
        return f"{self.jid}/{nick}"

    @property
    def non_anonymous(self) -> bool:
        return self.config.whois == "anyone"

    def is_empty(self) -> bool:
        return not self.occupants

    # -- presence -----------------------------------------------------------------------
    def presence(self, sender: str, nick: str, stanza: domish.Element, created: bool = False) -> None:
        """An available or unavailable presence from real JID ``sender`` to ``room/nick``."""
        kind = stanza.getAttribute("type")
        if kind == "unavailable":
            occupant = self.by_jid.get(sender)
            if occupant is not None:
                self._leave(occupant, stanza)
            return
        if kind == "error":
            self.remove_ghost(sender)
            return
        if kind not in (None, "available"):
            return
        occupant = self.by_jid.get(sender)
        if occupant is None:
            self._join(sender, nick, stanza, created)
        elif occupant.nick != nick:
            self._change_nick(occupant, nick, stanza)
        elif _child(stanza, NS_MUC, "x") is not None:
            # A join from a client that thinks it left (after a failed XEP-0410 self-ping,
            # or a reconnect): answer as to a join (occupants, self-presence, history, subject).
            self._drop(occupant)
            self._join(sender, nick, stanza, created)
        else:
            occupant.presence = _presence_payload(stanza)
            self._broadcast_presence(occupant)

    def _join(self, sender: str, nick: str, stanza: domish.Element, created: bool) -> None:
        if not nick or len(nick) > 1023:
            raise StanzaError("jid-malformed", "a nickname is required")
        aff = self.affiliation(sender)
        if self.locked and aff != "owner":
            raise StanzaError("item-not-found", "the room is locked until its owner configures it")
        if aff == "outcast":
            raise StanzaError("forbidden", "you are banned from this room")
        x = _child(stanza, NS_MUC, "x")
        if self.config.membersonly and aff == "none":
            raise StanzaError("registration-required", "this room is members-only")
        if self.config.passwordprotectedroom and aff != "owner":
            password = _child(x, None, "password")
            given = str(password) if password is not None else ""
            if given != self.config.roomsecret:
                raise StanzaError("not-authorized", "a password is required")
        holder = self.occupants.get(nick)
        if holder is not None and holder.bare != sender.split("/", 1)[0]:
            raise StanzaError("conflict", "that nickname is in use")
        limit = self.config.maxusers or self.limits.max_occupants
        limit = min(limit, self.limits.max_occupants)
        if len(self.occupants) >= limit and aff not in ("owner", "admin"):
            raise StanzaError("service-unavailable", "the room is full")
        if holder is not None:
            # Same bare JID under the same nick from another resource: tigasepy keeps one
            # real JID per nick, the newest joins and the older one is replaced.
            self._drop(holder)
        occupant = Occupant(nick, sender, default_role(aff, self.config), _presence_payload(stanza))
        for other in list(self.occupants.values()):
            self._send(self._presence_of(other, to=occupant))
        self.occupants[nick] = occupant
        self.by_jid[sender] = occupant
        codes = ["110"]
        if self.non_anonymous:
            codes.append("100")
        if self.config.enablelogging:
            codes.append("170")
        if created:
            codes.append("201")
        for other in self.occupants.values():
            self._send(self._presence_of(occupant, to=other, codes=codes if other is occupant else ()))
        history_el = _child(x, NS_MUC, "history") if x is not None else None
        for entry in history_to_send(list(self.history), history_el, self._clock()):
            message = copy_element(entry.stanza)
            message["to"] = sender
            delay = message.addElement((NS_DELAY, "delay"))
            delay["from"] = self.jid
            delay["stamp"] = stamp_text(entry.stamp)
            self._send(message)
        subject = domish.Element((None, "message"))
        subject["type"] = "groupchat"
        subject["to"] = sender
        subject["from"] = self.occupant_jid(self.subject_nick) if self.subject_nick else self.jid
        subject.addChild(copy_element(self.subject) if self.subject is not None else domish.Element((None, "subject")))
        self._send(subject)

    def _change_nick(self, occupant: Occupant, nick: str, stanza: domish.Element) -> None:
        holder = self.occupants.get(nick)
        if holder is not None and holder is not occupant:
            raise StanzaError("conflict", "that nickname is in use")
        for other in self.occupants.values():
            unavailable = self._presence_of(occupant, to=other, unavailable=True,
                                            codes=("303", "110") if other is occupant else ("303",),
                                            new_nick=nick)
            self._send(unavailable)
        del self.occupants[occupant.nick]
        occupant.nick = nick
        occupant.presence = _presence_payload(stanza)
        self.occupants[nick] = occupant
        for other in self.occupants.values():
            self._send(self._presence_of(occupant, to=other, codes=("110",) if other is occupant else ()))

    def _leave(self, occupant: Occupant, stanza: domish.Element | None = None,
               codes: tuple[str, ...] = (), actor: str | None = None, reason: str | None = None) -> None:
        status = None
        if stanza is not None:
            for child in stanza.elements():
                if child.name == "status":
                    status = str(child)
        for other in list(self.occupants.values()):
            own = other is occupant
            self._send(self._presence_of(occupant, to=other, unavailable=True,
                                         codes=codes + (("110",) if own else ()), status=status,
                                         actor=actor, reason=reason, role="none"))
        self._drop(occupant)
        if self.is_empty() and not self.config.persistentroom:
            self.on_gone(self)

    def _drop(self, occupant: Occupant) -> None:
        self.occupants.pop(occupant.nick, None)
        self.by_jid.pop(occupant.jid, None)

    def remove_ghost(self, jid: str) -> bool:
        """Remove the occupant with real JID ``jid`` (its server bounced a stanza: it is gone)."""
        occupant = self.by_jid.get(jid)
        if occupant is None:
            return False
        self._drop(occupant)
        for other in list(self.occupants.values()):
            self._send(self._presence_of(occupant, to=other, unavailable=True, codes=("333",), role="none"))
        if self.is_empty() and not self.config.persistentroom:
            self.on_gone(self)
        return True

    def _presence_of(self, occupant: Occupant, to: Occupant, codes: Any = (), unavailable: bool = False,
                     new_nick: str | None = None, status: str | None = None, actor: str | None = None,
                     reason: str | None = None, role: str | None = None) -> domish.Element:
        if unavailable:
            presence = domish.Element((None, "presence"))
            presence["type"] = "unavailable"
            if status:
                presence.addElement("status", content=status)
        elif occupant.presence is not None:
            presence = copy_element(occupant.presence)
        else:
            presence = domish.Element((None, "presence"))
        presence["from"] = self.occupant_jid(occupant.nick)
        presence["to"] = to.jid
        x = presence.addElement((NS_MUC_USER, "x"))
        item = x.addElement("item")
        item["affiliation"] = self.affiliation(occupant.jid)
        item["role"] = role or occupant.role
        if self.non_anonymous or to.role == "moderator" or to is occupant:
            item["jid"] = occupant.jid
        if new_nick:
            item["nick"] = new_nick
        if actor:
            item.addElement("actor")["nick"] = actor
        if reason:
            item.addElement("reason", content=reason)
        for code in codes:
            x.addElement("status")["code"] = code
        return presence

    def _broadcast_presence(self, occupant: Occupant) -> None:
        for other in self.occupants.values():
            self._send(self._presence_of(occupant, to=other, codes=("110",) if other is occupant else ()))

    # -- messages -----------------------------------------------------------------------
    def groupchat(self, sender: str, stanza: domish.Element) -> None:
        occupant = self.by_jid.get(sender)
        if occupant is None:
            raise StanzaError("not-acceptable", "you are not in this room")
        if self.limits.message_size and len(stanza.toXml()) > self.limits.message_size:
            raise StanzaError("not-acceptable", "the message is too large")
        children = [c for c in stanza.elements()]
        subject = next((c for c in children if c.name == "subject"), None)
        body = next((c for c in children if c.name == "body"), None)
        if subject is not None and body is None:
            if not (occupant.role == "moderator" or (self.config.changesubject and occupant.role == "participant")):
                raise StanzaError("forbidden", "you may not change the subject")
            self.subject = copy_element(subject)
            self.subject_nick = occupant.nick
        elif occupant.role == "visitor":
            raise StanzaError("forbidden", "visitors have no voice in this moderated room")
        out = domish.Element((None, "message"))
        out["type"] = "groupchat"
        out["from"] = self.occupant_jid(occupant.nick)
        if stanza.getAttribute("id"):
            out["id"] = stanza["id"]
        for child in children:
            if child.uri == NS_SID and child.name == "stanza-id":
                continue                        # never pass a client's stanza-id on
            out.addChild(copy_element(child))
        uid = uuid.uuid4().hex[:16]
        sid = out.addElement((NS_SID, "stanza-id"))
        sid["id"] = uid
        sid["by"] = self.jid
        now = self._clock()
        if body is not None or subject is not None:
            self.history.append(HistoryEntry(now, occupant.nick, occupant.jid, out, len(str(body or ""))))
        if self.config.enablelogging and self._archive is not None and body is not None:
            self._archive(uid, occupant.jid, now, out)
        for other in self.occupants.values():
            copy = copy_element(out)
            copy["to"] = other.jid
            self._send(copy)

    def private_message(self, sender: str, nick: str, stanza: domish.Element) -> None:
        occupant = self.by_jid.get(sender)
        if occupant is None:
            raise StanzaError("not-acceptable", "you are not in this room")
        target = self.occupants.get(nick)
        if target is None:
            raise StanzaError("item-not-found", "no such occupant")
        if not may_send_pm(self.config, occupant.role):
            raise StanzaError("forbidden", "private messages are not allowed in this room")
        out = copy_element(stanza)
        out["from"] = self.occupant_jid(occupant.nick)
        out["to"] = target.jid
        if _child(out, NS_MUC_USER, "x") is None:
            out.addElement((NS_MUC_USER, "x"))
        self._send(out)

    # -- admin (muc#admin) --------------------------------------------------------------
    def admin_get(self, sender: str, query: domish.Element) -> domish.Element:
        actor = self.by_jid.get(sender)
        aff = self.affiliation(sender)
        result = domish.Element((NS_MUC_ADMIN, "query"))
        for item in query.elements(NS_MUC_ADMIN, "item"):
            if item.getAttribute("affiliation"):
                wanted = item["affiliation"]
                if wanted not in AFFILIATIONS or wanted == "none":
                    raise StanzaError("bad-request")
                if aff not in ("owner", "admin") and not (actor is not None and actor.role == "moderator"):
                    raise StanzaError("forbidden")
                for jid, a in sorted(self.affiliations.items()):
                    if a == wanted:
                        out = result.addElement("item")
                        out["affiliation"], out["jid"] = a, jid
            elif item.getAttribute("role"):
                if actor is None or actor.role != "moderator":
                    raise StanzaError("forbidden")
                for occupant in self.occupants.values():
                    if occupant.role == item["role"]:
                        out = result.addElement("item")
                        out["role"], out["nick"], out["jid"] = occupant.role, occupant.nick, occupant.jid
                        out["affiliation"] = self.affiliation(occupant.jid)
            else:
                raise StanzaError("bad-request")
        return result

    def admin_set(self, sender: str, query: domish.Element) -> None:
        items = list(query.elements(NS_MUC_ADMIN, "item"))
        if not items:
            raise StanzaError("bad-request")
        actor = self.by_jid.get(sender)
        actor_aff = self.affiliation(sender)
        actor_nick = actor.nick if actor is not None else None
        changes: list[Callable[[], None]] = []
        for item in items:
            reason_el = next((c for c in item.elements() if c.name == "reason"), None)
            reason = str(reason_el) if reason_el is not None else None
            if item.getAttribute("role") and item.getAttribute("nick"):
                target = self.occupants.get(item["nick"])
                role = item["role"]
                if target is None:
                    raise StanzaError("item-not-found", "no such occupant")
                if role not in ROLES:
                    raise StanzaError("bad-request")
                if actor is None or actor.role != "moderator":
                    raise StanzaError("forbidden")
                if role == "moderator" and actor_aff not in ("owner", "admin"):
                    raise StanzaError("forbidden", "only admins and owners grant moderator")
                if not may_kick(actor.role, actor_aff, self.affiliation(target.jid)):
                    raise StanzaError("not-allowed", "you may not change that occupant's role")
                changes.append(functools.partial(self._set_role, target, role, actor_nick, reason))
            elif item.getAttribute("affiliation") and item.getAttribute("jid"):
                new = item["affiliation"]
                if new not in AFFILIATIONS:
                    raise StanzaError("bad-request")
                target_jid = item["jid"].split("/", 1)[0]
                old = self.affiliations.get(target_jid, "none")
                if not may_set_affiliation(actor_aff, old, new):
                    raise StanzaError("forbidden", "you may not change that affiliation")
                if old == "owner" and new != "owner" and \
                        [j for j, a in self.affiliations.items() if a == "owner"] == [target_jid]:
                    raise StanzaError("conflict", "a room needs an owner")
                changes.append(functools.partial(self._set_affiliation, target_jid, new, actor_nick, reason))
            else:
                raise StanzaError("bad-request")
        for change in changes:
            change()
        self.on_changed(self)

    def _set_role(self, target: Occupant, role: str, actor: str | None, reason: str | None) -> None:
        if role == "none":
            self._leave(target, codes=("307",), actor=actor, reason=reason)
            return
        target.role = role
        for other in self.occupants.values():
            self._send(self._presence_of(target, to=other, actor=actor, reason=reason))

    def _set_affiliation(self, jid: str, aff: str, actor: str | None, reason: str | None) -> None:
        if aff == "none":
            self.affiliations.pop(jid, None)
        else:
            self.affiliations[jid] = aff
        for occupant in [o for o in self.occupants.values() if o.bare == jid]:
            if aff == "outcast":
                self._leave(occupant, codes=("301",), actor=actor, reason=reason)
            elif aff == "none" and self.config.membersonly:
                self._leave(occupant, codes=("321",), actor=actor, reason=reason)
            else:
                occupant.role = default_role(aff, self.config)
                for other in self.occupants.values():
                    self._send(self._presence_of(occupant, to=other, actor=actor, reason=reason))

    # -- owner (muc#owner) --------------------------------------------------------------
    def require_owner(self, sender: str) -> None:
        if self.affiliation(sender) != "owner":
            raise StanzaError("forbidden", "only owners may do that")

    def apply_config(self, values: dict[str, Any]) -> None:
        """Apply submitted muc#roomconfig values (option names with the prefix stripped)."""
        old_nonanon = self.non_anonymous
        old_logging = self.config.enablelogging
        data = self.config.to_dict()
        for key, value in values.items():
            if value is None or key not in data:
                continue
            if key == "maxusers":
                try:
                    value = int(value) if str(value).strip() else 0
                except ValueError:
                    raise StanzaError("not-acceptable", "maxusers must be a number") from None
            data[key] = value
        self.config = RoomConfig.from_dict(data)
        self.locked = False
        if self.config.passwordprotectedroom and not self.config.roomsecret:
            self.config.passwordprotectedroom = False
        if self.config.roomsecret and values.get("passwordprotectedroom") is None:
            self.config.passwordprotectedroom = True
        if self.config.membersonly:
            for occupant in [o for o in self.occupants.values() if self.affiliation(o.jid) == "none"]:
                self._leave(occupant, codes=("322",))
        codes = ["104"]
        if self.non_anonymous != old_nonanon:
            codes.append("172" if self.non_anonymous else "173")
        if self.config.enablelogging != old_logging:
            codes.append("170" if self.config.enablelogging else "171")
        for occupant in self.occupants.values():
            notice = domish.Element((None, "message"))
            notice["type"] = "groupchat"
            notice["from"], notice["to"] = self.jid, occupant.jid
            x = notice.addElement((NS_MUC_USER, "x"))
            for code in codes:
                x.addElement("status")["code"] = code
            self._send(notice)
        self.on_changed(self)

    def destroy(self, reason: str | None = None, alternate: str | None = None) -> None:
        for occupant in list(self.occupants.values()):
            presence = domish.Element((None, "presence"))
            presence["type"] = "unavailable"
            presence["from"], presence["to"] = self.occupant_jid(occupant.nick), occupant.jid
            x = presence.addElement((NS_MUC_USER, "x"))
            item = x.addElement("item")
            item["affiliation"], item["role"] = "none", "none"
            destroy = x.addElement("destroy")
            if alternate:
                destroy["jid"] = alternate
            if reason:
                destroy.addElement("reason", content=reason)
            self._send(presence)
        self.occupants.clear()
        self.by_jid.clear()
        self.on_gone(self)

    # -- disco --------------------------------------------------------------------------
    def features(self) -> list[str]:
        c = self.config
        return [NS_MUC, "http://jabber.org/protocol/disco#info", "urn:xmpp:ping", NS_SID,
                "muc_persistent" if c.persistentroom else "muc_temporary",
                "muc_public" if c.publicroom else "muc_hidden",
                "muc_membersonly" if c.membersonly else "muc_open",
                "muc_moderated" if c.moderatedroom else "muc_unmoderated",
                "muc_passwordprotected" if c.passwordprotectedroom else "muc_unsecured",
                "muc_nonanonymous" if self.non_anonymous else "muc_semianonymous"] + \
            (["urn:xmpp:mam:2"] if c.enablelogging else [])


def _presence_payload(stanza: domish.Element) -> domish.Element:
    """The parts of a presence broadcast to occupants: show, status, priority, caps...
    (the MUC join element removed)."""
    out = domish.Element((None, "presence"))
    for child in stanza.elements():
        if child.uri in (NS_MUC, NS_MUC_USER):
            continue
        out.addChild(copy_element(child))
    return out


def _child(parent: domish.Element | None, uri: str | None, name: str) -> domish.Element | None:
    if parent is None:
        return None
    for child in parent.elements():
        if child.name == name and (uri is None or child.uri == uri):
            return child
    return None
