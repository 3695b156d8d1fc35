"""The MUC service: a component that owns rooms under its domain (XEP-0045).

Addresses:

- ``conference.example.org``: the service (disco#info/items, room listing);
- ``room@conference.example.org``: a room (groupchat messages, muc#admin, muc#owner,
  disco, XEP-0313 archive queries);
- ``room@conference.example.org/nick``: an occupant (joining, private messages,
  XEP-0410 self-ping).

Persistent rooms' config and affiliations go to an ``IMucRoomStore``; room archives to
the server's ``IArchiveStore`` under the room's bare JID.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.words.xish import domish

from tigasepy.components.base import Component
from tigasepy.components.muc.room import (NS_MUC, NS_MUC_ADMIN, NS_MUC_OWNER, NS_MUC_USER, NS_ROOMCONFIG,
                                          NS_ROOMINFO, Limits, Room, RoomConfig, _child)
from tigasepy.log_level import Logger
from tigasepy.storage.muc import IMucRoomStore, MemoryMucRoomStore, StoredRoom
from tigasepy.compat import data_form
from tigasepy.sm.dispatch import error_reply_for
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import StanzaError, error_condition
from tigasepy.xmpp.forms import FormError, find_form, parse_submission
from tigasepy.xmpp.jid import InvalidFormat, parse_jid
from tigasepy.xmpp.stanza import copy_element, first_child, iq_result

NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FORWARD = "urn:xmpp:forward:0"

#: Errors from an occupant's side that mean it is gone (XEP-0045 and XEP-0410 ghost removal).
GHOST_CONDITIONS = frozenset({"gone", "item-not-found", "recipient-unavailable", "redirect",
                              "remote-server-not-found", "remote-server-timeout", "service-unavailable"})
#: Forwarded IQs between occupants waiting for their answer, at most.
MAX_FORWARDED = 10000


@dataclass(frozen=True)
class MucConfig:
    """``[components.muc]`` options."""

    name: str = "Chatrooms"
    max_rooms: int = 1000
    max_occupants: int = 200
    history_size: int = 20
    message_size: int = 16384
    #: who may create rooms: "anyone", or "local" (JIDs of the parent domain only)
    create_rooms: str = "anyone"
    mam_page_size: int = 50
    mam_max_page_size: int = 250
    #: new rooms stay locked until the owner submits the config form (XEP-0045 10.1)
    lock_new_rooms: bool = True

    def validate(self, path: tuple[str, ...]) -> None:
        from tigasepy.config import ConfigError
        for name in ("max_rooms", "max_occupants", "history_size", "message_size", "mam_page_size",
                     "mam_max_page_size"):
            if getattr(self, name) < 1:
                raise ConfigError("must be >= 1", path + (name,))
        if self.create_rooms not in ("anyone", "local"):
            raise ConfigError("must be 'anyone' or 'local'", path + ("create_rooms",))


class MultiUserChat(Component):
    """XEP-0045 Multi-User Chat, with XEP-0313 room archives and XEP-0410 self-ping."""

    config_type = MucConfig
    #: The service passes the server's stores to ``attach`` (see docs/components.md).
    needs_stores = True
    _log = Logger()

    def __init__(self, domain: str, config: MucConfig | None = None) -> None:
        super().__init__(domain, config or MucConfig())
        self.rooms: dict[str, Room] = {}
        self.room_store: Any = MemoryMucRoomStore()
        self.archive: Any = None
        self.limits = Limits(self.config.max_occupants, self.config.history_size, self.config.message_size)
        self.loaded: defer.Deferred = defer.succeed(None)
        #: forwarded IQ id -> (requester's real JID, its id, the target's occupant JID)
        self._forwarded: dict[str, tuple[str, str | None, str]] = {}
        self._ids = itertools.count(1)

    # -- wiring -------------------------------------------------------------------------
    def use_stores(self, stores: Any) -> None:
        """Take the room store and the archive store from the server's ``Stores``."""
        from tigasepy.storage.interfaces import IArchiveStore
        for interface, attr in ((IMucRoomStore, "room_store"), (IArchiveStore, "archive")):
            try:
                setattr(self, attr, stores.get(interface))
            except KeyError:
                pass

    def attach(self, router: Any, stores: Any = None) -> None:
        if stores is not None:
            self.use_stores(stores)
        super().attach(router)
        self.loaded = defer.maybeDeferred(self.room_store.load_rooms, self.domain)
        self.loaded.addCallback(self._restore)
        self.loaded.addErrback(lambda f: self._log.failure("loading persistent rooms failed", f))

    def _restore(self, stored: list[StoredRoom]) -> None:
        for item in stored:
            if item.jid not in self.rooms:
                self._new_room(item.jid, RoomConfig.from_dict(item.config), item.affiliations)

    def _new_room(self, jid: str, config: RoomConfig | None = None,
                  affiliations: dict[str, str] | None = None) -> Room:
        room = Room(jid, self.send, self.limits, config, affiliations, archive=self._archive_message)
        room.on_changed = self._changed
        room.on_gone = self._gone
        self.rooms[jid] = room
        return room

    def _changed(self, room: Room) -> None:
        if room.config.persistentroom:
            d = defer.maybeDeferred(self.room_store.save_room, self.domain,
                                    StoredRoom(room.jid, room.config.to_dict(), dict(room.affiliations)))
        else:
            d = defer.maybeDeferred(self.room_store.delete_room, self.domain, room.jid)
            if room.is_empty():
                self._gone(room)
        d.addErrback(lambda f: self._log.failure("storing room {room} failed", f, room=room.jid))

    def _gone(self, room: Room) -> None:
        if self.rooms.get(room.jid) is room:
            del self.rooms[room.jid]

    def _archive_message(self, uid: str, sender: str, stamp: float, stanza: domish.Element) -> None:
        if self.archive is None:
            return
        room = stanza["from"].split("/", 1)[0]
        d = defer.maybeDeferred(self.archive.append, room, uid, stanza["from"], stamp, stanza.toXml())
        d.addErrback(lambda f: self._log.failure("archiving in {room} failed", f, room=room))

    # -- dispatch -----------------------------------------------------------------------
    def receive(self, stanza: domish.Element) -> None:
        try:
            self._dispatch(stanza)
        except Exception as e:
            reply = error_reply_for(stanza, e)
            if reply is not None:
                self.send(reply)

    def _dispatch(self, stanza: domish.Element) -> None:
        try:
            to = parse_jid(stanza.getAttribute("to"))
            sender = parse_jid(stanza.getAttribute("from"))
        except InvalidFormat:
            raise StanzaError("jid-malformed") from None
        if to is None or sender is None:
            return
        kind = stanza.getAttribute("type")
        if stanza.name == "iq" and kind in ("result", "error") and stanza.getAttribute("id") in self._forwarded:
            self._forwarded_reply(stanza)
            return
        if kind == "error":
            if stanza.name == "presence" or error_condition(stanza) in GHOST_CONDITIONS:
                self._bounced(sender.full())
            return
        if to.user is None:
            if stanza.name == "iq":
                self._service_iq(stanza)
            elif stanza.name == "message":
                raise StanzaError("service-unavailable")
            return
        room_jid = to.userhost()
        room = self.rooms.get(room_jid)
        if stanza.name == "presence":
            if to.resource is None:
                if kind != "unavailable":
                    raise StanzaError("jid-malformed", "join with room@service/nick")
                return
            created = False
            if room is None:
                if kind == "unavailable":
                    return
                room = self._create(room_jid, sender.full())
                created = True
            try:
                room.presence(sender.full(), to.resource, stanza, created=created)
            except StanzaError:
                if created:
                    self._gone(room)
                raise
            return
        if stanza.name == "iq" and to.resource is not None:
            self._occupant_iq(room, sender.full(), to.resource, stanza)
            return
        if room is None:
            if stanza.name == "iq" or kind != "groupchat":
                raise StanzaError("item-not-found", "no such room")
            raise StanzaError("item-not-found", "no such room")
        if stanza.name == "message":
            if to.resource is None:
                if kind == "groupchat":
                    room.groupchat(sender.full(), stanza)
                else:
                    self._room_message(room, sender.full(), stanza)
            else:
                if kind == "groupchat":
                    raise StanzaError("bad-request", "groupchat messages go to the room")
                room.private_message(sender.full(), to.resource, stanza)
            return
        if stanza.name == "iq":
            self._room_iq(room, sender.full(), stanza)

    def _create(self, room_jid: str, creator: str) -> Room:
        if self.config.create_rooms == "local":
            parent = self.domain.split(".", 1)[-1]
            if creator.split("/", 1)[0].rpartition("@")[2] != parent:
                raise StanzaError("not-allowed", "you may not create rooms here")
        if len(self.rooms) >= self.config.max_rooms:
            raise StanzaError("resource-constraint", "too many rooms")
        room = self._new_room(room_jid)
        room.affiliations[creator.split("/", 1)[0]] = "owner"
        room.locked = self.config.lock_new_rooms
        return room

    def _bounced(self, jid: str) -> None:
        """An error from a user: an occupant whose server bounced a stanza is gone (ghost cleanup)."""
        for room in list(self.rooms.values()):
            room.remove_ghost(jid)

    def _room_message(self, room: Room, sender: str, stanza: domish.Element) -> None:
        """A non-groupchat message to the room: mediated invitations (section 7.8.2)."""
        x = _child(stanza, NS_MUC_USER, "x")
        invites = [c for c in x.elements() if c.name == "invite"] if x is not None else []
        if not invites:
            raise StanzaError("bad-request", "send groupchat messages of type groupchat")
        occupant = room.by_jid.get(sender)
        if occupant is None:
            raise StanzaError("not-acceptable", "you are not in this room")
        if room.config.membersonly and not room.config.allowinvites and \
                room.affiliation(sender) not in ("owner", "admin"):
            raise StanzaError("forbidden", "only admins may invite to this room")
        for invite in invites:
            try:
                invitee = parse_jid(invite.getAttribute("to"))
            except InvalidFormat:
                invitee = None
            if invitee is None:
                raise StanzaError("jid-malformed", "the invitee is not a JID")
            if room.config.membersonly and room.affiliation(invitee.full()) == "none":
                room.affiliations[invitee.userhost()] = "member"
                room.on_changed(room)
            out = domish.Element((None, "message"))
            out["from"], out["to"] = room.jid, invitee.full()
            ox = out.addElement((NS_MUC_USER, "x"))
            inv = ox.addElement("invite")
            inv["from"] = sender if room.non_anonymous else room.occupant_jid(occupant.nick)
            reason = _child(invite, None, "reason")
            if reason is not None:
                inv.addElement("reason", content=str(reason))
            if room.config.passwordprotectedroom:
                ox.addElement("password", content=room.config.roomsecret)
            self.send(out)

    # -- IQs ----------------------------------------------------------------------------
    def _reply(self, stanza: domish.Element, payload: domish.Element | None) -> None:
        if stanza.getAttribute("type") in ("get", "set"):
            self.send(iq_result(stanza, payload))

    def _service_iq(self, stanza: domish.Element) -> None:
        kind = stanza.getAttribute("type")
        if kind not in ("get", "set"):
            return
        query = first_child(stanza)
        if kind == "get" and query is not None and query.uri == ns.DISCO_INFO and not query.getAttribute("node"):
            result = domish.Element((ns.DISCO_INFO, "query"))
            identity = result.addElement("identity")
            identity["category"], identity["type"], identity["name"] = "conference", "text", self.config.name
            for feature in (ns.DISCO_INFO, ns.DISCO_ITEMS, NS_MUC, "urn:xmpp:ping", "urn:xmpp:sid:0"):
                result.addElement("feature")["var"] = feature
            self._reply(stanza, result)
        elif kind == "get" and query is not None and query.uri == ns.DISCO_ITEMS and not query.getAttribute("node"):
            result = domish.Element((ns.DISCO_ITEMS, "query"))
            for jid, room in sorted(self.rooms.items()):
                if room.config.publicroom:
                    item = result.addElement("item")
                    item["jid"] = jid
                    item["name"] = room.config.roomname or jid.split("@", 1)[0]
            self._reply(stanza, result)
        elif kind == "get" and query is not None and query.uri == ns.PING:
            self._reply(stanza, None)
        else:
            raise StanzaError("service-unavailable")

    def _occupant_iq(self, room: Room | None, sender: str, nick: str, stanza: domish.Element) -> None:
        query = first_child(stanza)
        if query is not None and query.uri == ns.PING and stanza.getAttribute("type") == "get":
            # XEP-0410: the room answers a ping to one's own occupant JID.
            occupant = room.by_jid.get(sender) if room is not None else None
            if occupant is None:
                raise StanzaError("not-acceptable", "you are not in this room")
            if occupant.nick == nick:
                self._reply(stanza, None)
                return
            # a ping to another occupant is forwarded like any IQ (below)
        if room is None or nick not in room.occupants:
            raise StanzaError("item-not-found", "no such occupant")
        requester = room.by_jid.get(sender)
        if requester is None:
            raise StanzaError("not-acceptable", "you are not in this room")
        if stanza.getAttribute("type") not in ("get", "set"):
            return
        if len(self._forwarded) >= MAX_FORWARDED:
            raise StanzaError("resource-constraint", "too many queries in flight")
        # Section 7.6: an IQ to an occupant goes to its real JID from the requester's
        # occupant JID; the answer comes back the same way.
        target = room.occupants[nick]
        forwarded_id = f"muc-{next(self._ids)}"
        self._forwarded[forwarded_id] = (sender, stanza.getAttribute("id"), room.occupant_jid(nick))
        out = copy_element(stanza)
        out["id"] = forwarded_id
        out["from"] = room.occupant_jid(requester.nick)
        out["to"] = target.jid
        self.send(out)

    def _forwarded_reply(self, stanza: domish.Element) -> None:
        requester, original_id, target = self._forwarded.pop(stanza["id"])
        out = copy_element(stanza)
        if original_id is None:
            del out["id"]
        else:
            out["id"] = original_id
        out["from"], out["to"] = target, requester
        self.send(out)

    def _room_iq(self, room: Room, sender: str, stanza: domish.Element) -> None:
        kind = stanza.getAttribute("type")
        if kind not in ("get", "set"):
            return
        query = first_child(stanza)
        if query is None:
            raise StanzaError("bad-request")
        if room.affiliation(sender) == "outcast":
            raise StanzaError("forbidden")
        if query.uri == ns.DISCO_INFO and kind == "get":
            self._reply(stanza, self._room_info(room))
        elif query.uri == ns.DISCO_ITEMS and kind == "get":
            self._reply(stanza, domish.Element((ns.DISCO_ITEMS, "query")))
        elif query.uri == ns.PING and kind == "get":
            self._reply(stanza, None)
        elif query.uri == NS_MUC_ADMIN:
            if kind == "get":
                self._reply(stanza, room.admin_get(sender, query))
            else:
                room.admin_set(sender, query)
                self._reply(stanza, None)
        elif query.uri == NS_MUC_OWNER:
            self._owner(room, sender, stanza, query)
        elif query.uri == NS_MAM and kind == "set" and query.name == "query":
            self._mam_query(room, sender, stanza, query)
        elif query.uri == NS_MAM and kind == "get" and query.name == "query":
            form = data_form.Form("form", formNamespace=NS_MAM)
            for var, kind_ in (("with", "jid-single"), ("start", "text-single"), ("end", "text-single")):
                form.addField(data_form.Field(kind_, var=var))
            result = domish.Element((NS_MAM, "query"))
            result.addChild(form.toElement())
            self._reply(stanza, result)
        else:
            raise StanzaError("service-unavailable")

    def _room_info(self, room: Room) -> domish.Element:
        result = domish.Element((ns.DISCO_INFO, "query"))
        identity = result.addElement("identity")
        identity["category"], identity["type"] = "conference", "text"
        identity["name"] = room.config.roomname or room.jid.split("@", 1)[0]
        for feature in room.features():
            result.addElement("feature")["var"] = feature
        form = data_form.Form("result", formNamespace=NS_ROOMINFO)
        form.addField(data_form.Field("text-single", var="muc#roominfo_description",
                                      value=room.config.roomdesc))
        form.addField(data_form.Field("text-single", var="muc#roominfo_occupants",
                                      value=str(len(room.occupants))))
        form.addField(data_form.Field("text-single", var="muc#roominfo_subject",
                                      value=str(room.subject or "")))
        form.addField(data_form.Field("boolean", var="muc#roominfo_changesubject",
                                      value=room.config.changesubject))
        result.addChild(form.toElement())
        return result

    def _owner(self, room: Room, sender: str, stanza: domish.Element, query: domish.Element) -> None:
        room.require_owner(sender)
        if stanza["type"] == "get":
            result = domish.Element((NS_MUC_OWNER, "query"))
            result.addChild(config_form(room.config).toElement())
            self._reply(stanza, result)
            return
        destroy = _child(query, None, "destroy")
        if destroy is not None:
            reason = _child(destroy, None, "reason")
            room.destroy(str(reason) if reason is not None else None, destroy.getAttribute("jid"))
            d = defer.maybeDeferred(self.room_store.delete_room, self.domain, room.jid)
            d.addErrback(lambda f: self._log.failure("forgetting room {room} failed", f, room=room.jid))
            self._reply(stanza, None)
            return
        form = find_form(query)
        if form is None:
            raise StanzaError("bad-request", "a muc#roomconfig form or <destroy/> is expected")
        if form.getAttribute("type") == "cancel":
            if room.locked:             # the creator gave up configuring a new room
                room.destroy()
            self._reply(stanza, None)
            return
        try:
            values = parse_submission(form, config_form(room.config))
        except FormError as e:
            raise StanzaError("not-acceptable", str(e)) from None
        room.apply_config({k.split("#", 1)[-1].replace("roomconfig_", ""): v for k, v in values.items()
                           if k.startswith("muc#roomconfig_")})
        self._reply(stanza, None)

    # -- XEP-0313 on the room -----------------------------------------------------------
    def _mam_query(self, room: Room, sender: str, stanza: domish.Element, query: domish.Element) -> None:
        from tigasepy.extensions.mam import _fin, _form_fields, _natural, parse_stamp
        from tigasepy.storage.interfaces import ArchiveQuery
        if not room.config.enablelogging or self.archive is None:
            raise StanzaError("service-unavailable", "this room keeps no archive")
        if room.config.membersonly and room.affiliation(sender) in ("none", "outcast") \
                and sender not in room.by_jid:
            raise StanzaError("forbidden", "members only")
        fields: dict[str, list[str]] = {}
        rsm = None
        for child in query.elements():
            if child.uri == ns.DATA_FORMS and child.name == "x":
                fields = _form_fields(child)
            elif child.uri == NS_RSM and child.name == "set":
                rsm = child
        times: dict[str, float] = {}
        for name in ("start", "end"):
            if fields.get(name):
                try:
                    times[name] = parse_stamp(fields[name][0])
                except ValueError:
                    raise StanzaError("bad-request", f"'{name}' is not a DateTime") from None
        with_jid = fields["with"][0] if fields.get("with") else None
        limit = self.config.mam_page_size
        after = before = None
        last_page = False
        if rsm is not None:
            for child in rsm.elements():
                if child.name == "max":
                    limit = min(_natural(child, "max"), self.config.mam_max_page_size)
                elif child.name == "after":
                    after = str(child).strip() or None
                elif child.name == "before":
                    before = str(child).strip() or None
                    last_page = before is None
        full = ArchiveQuery(with_jid=with_jid, start=times.get("start"), end=times.get("end"))
        queryid = query.getAttribute("queryid")

        @defer.inlineCallbacks
        def run() -> Any:
            ids = [u for u in (after, before) if u]
            found = (yield self.archive.positions(room.jid, ids)) if ids else {}
            if any(u not in found for u in ids):
                raise StanzaError("item-not-found", "no such message in the archive")
            page_query = full
            if after:
                page_query = ArchiveQuery(page_query.with_jid, page_query.start, page_query.end,
                                          after_seq=found[after])
            if before:
                page_query = ArchiveQuery(page_query.with_jid, page_query.start, page_query.end,
                                          after_seq=page_query.after_seq, before_seq=found[before])
            count = yield self.archive.count(room.jid, full)
            if limit == 0:
                page, complete = [], count == 0
            elif last_page or before:
                got = yield self.archive.query(room.jid, page_query, limit + 1, newest_first=True)
                complete = len(got) <= limit
                page = list(reversed(got[:limit]))
            else:
                got = yield self.archive.query(room.jid, page_query, limit + 1)
                complete = len(got) <= limit
                page = got[:limit]
            for message in page:
                self.send(self._mam_result(room.jid, sender, queryid, message))
            return _fin(page, count, None, complete)

        d = run()
        d.addCallback(lambda fin: self._reply(stanza, fin))
        d.addErrback(self._iq_failed, stanza)

    def _iq_failed(self, failure: Any, stanza: domish.Element) -> None:
        reply = error_reply_for(stanza, failure)
        if reply is not None:
            self.send(reply)

    def _mam_result(self, room: str, to: str, queryid: str | None, message: Any) -> domish.Element:
        from tigasepy.extensions.mam import _timestamp
        from tigasepy.stream.parser import parse_stanza
        wrapper = domish.Element((None, "message"))
        wrapper["to"], wrapper["from"] = to, room
        result = wrapper.addElement((NS_MAM, "result"))
        if queryid is not None:
            result["queryid"] = queryid
        result["id"] = message.id
        forwarded = result.addElement((NS_FORWARD, "forwarded"))
        forwarded.addElement((ns.DELAY, "delay"))["stamp"] = _timestamp(message.stamp)
        archived = parse_stanza(message.xml)
        if archived.getAttribute("to"):
            del archived["to"]
        forwarded.addChild(archived)
        return wrapper


def config_form(config: RoomConfig) -> Any:
    """The muc#roomconfig form with ``config``'s current values."""
    form = data_form.Form("form", formNamespace=NS_ROOMCONFIG, title="Room configuration")
    p = "muc#roomconfig_"
    form.addField(data_form.Field("text-single", var=p + "roomname", label="Name", value=config.roomname))
    form.addField(data_form.Field("text-single", var=p + "roomdesc", label="Description",
                                  value=config.roomdesc))
    for var, label in (("persistentroom", "Persistent"), ("publicroom", "Listed in the directory"),
                       ("membersonly", "Members only"), ("moderatedroom", "Moderated"),
                       ("passwordprotectedroom", "Password protected"),
                       ("changesubject", "Participants may change the subject"),
                       ("allowinvites", "Occupants may invite"),
                       ("enablelogging", "Archive messages")):
        form.addField(data_form.Field("boolean", var=p + var, label=label, value=getattr(config, var)))
    form.addField(data_form.Field("text-private", var=p + "roomsecret", label="Password",
                                  value=config.roomsecret))
    form.addField(data_form.Field("list-single", var=p + "maxusers", label="Maximum occupants",
                                  value=str(config.maxusers or ""),
                                  options=[data_form.Option(v) for v in ("", "10", "20", "50", "100", "200")]))
    form.addField(data_form.Field("list-single", var=p + "whois", label="Who may see real JIDs",
                                  value=config.whois,
                                  options=[data_form.Option("moderators"), data_form.Option("anyone")]))
    form.addField(data_form.Field("list-single", var=p + "allowpm", label="Who may send private messages",
                                  value=config.allowpm,
                                  options=[data_form.Option(v) for v in ("anyone", "participants",
                                                                           "moderators", "none")]))
    return form
