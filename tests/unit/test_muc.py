"""MUC (XEP-0045): room rules as functions, and the component driven through a fake router."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.words.xish import domish

from tigasepy.components.muc import MemoryMucRoomStore, MucConfig, MultiUserChat
from tigasepy.components.muc.room import (NS_MUC, NS_MUC_ADMIN, NS_MUC_OWNER, NS_MUC_USER, HistoryEntry,
                                          RoomConfig, default_role, history_to_send, may_kick,
                                          may_set_affiliation, may_send_pm)
from tigasepy.storage.memory import MemoryArchiveStore
from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp.errors import error_condition

SERVICE = "conference.example.org"
ROOM = f"room@{SERVICE}"
ALICE = "alice@example.org/phone"
BOB = "bob@example.org/laptop"
CAROL = "carol@example.org/x"


class FakeRouter:
    def __init__(self) -> None:
        self.routes: dict[str, Any] = {}
        self.sent: list[domish.Element] = []

    def add_route(self, domain: str, target: Any) -> None:
        self.routes[domain] = target

    def remove_route(self, domain: str) -> None:
        self.routes.pop(domain, None)

    def route(self, stanza: domish.Element) -> None:
        self.sent.append(stanza)


class Stores:
    def __init__(self) -> None:
        from tigasepy.components.muc import IMucRoomStore
        from tigasepy.storage.interfaces import IArchiveStore
        self.map = {IMucRoomStore: MemoryMucRoomStore(), IArchiveStore: MemoryArchiveStore()}

    def get(self, interface: Any) -> Any:
        return self.map[interface]


def xml(text: str) -> domish.Element:
    return parse_stanza(text)


@pytest.fixture
def muc() -> tuple[MultiUserChat, FakeRouter]:
    router = FakeRouter()
    component = MultiUserChat(SERVICE, MucConfig(lock_new_rooms=False))
    component.attach(router, Stores())
    return component, router


def take(router: FakeRouter) -> list[domish.Element]:
    sent, router.sent = router.sent, []
    return sent


def join(component: MultiUserChat, who: str, nick: str, extra: str = "") -> None:
    component.receive(xml(f"<presence from='{who}' to='{ROOM}/{nick}'><x xmlns='{NS_MUC}'>{extra}</x></presence>"))


def codes(stanza: domish.Element) -> set[str]:
    return {s["code"] for x in stanza.elements(NS_MUC_USER, "x") for s in x.elements() if s.name == "status"}


def to(stanzas: list[domish.Element], jid: str, name: str | None = None) -> list[domish.Element]:
    return [s for s in stanzas if s.getAttribute("to") == jid and (name is None or s.name == name)]


def test_rules() -> None:
    config = RoomConfig()
    assert default_role("owner", config) == "moderator"
    assert default_role("none", config) == "participant"
    assert default_role("none", RoomConfig(moderatedroom=True)) == "visitor"
    assert may_kick("moderator", "none", "none")
    assert not may_kick("moderator", "admin", "owner")
    assert not may_kick("participant", "member", "none")
    assert may_set_affiliation("admin", "none", "outcast")
    assert not may_set_affiliation("admin", "admin", "none")
    assert may_set_affiliation("owner", "admin", "none")
    assert not may_send_pm(RoomConfig(allowpm="none"), "moderator")
    assert may_send_pm(RoomConfig(allowpm="moderators"), "moderator")


def test_history_limits() -> None:
    entries = [HistoryEntry(100.0 + i, "n", "j", domish.Element((None, "message")), 10) for i in range(5)]
    h = domish.Element((NS_MUC, "history"))
    h["maxstanzas"] = "2"
    assert [e.stamp for e in history_to_send(entries, h, 200.0)] == [103.0, 104.0]
    h = domish.Element((NS_MUC, "history"))
    h["maxchars"] = "25"
    assert len(history_to_send(entries, h, 200.0)) == 2
    h = domish.Element((NS_MUC, "history"))
    h["seconds"] = "97"
    assert [e.stamp for e in history_to_send(entries, h, 200.0)] == [103.0, 104.0]
    h = domish.Element((NS_MUC, "history"))
    h["maxstanzas"] = "0"
    assert history_to_send(entries, h, 200.0) == []


def test_create_join_message_leave(muc: Any) -> None:
    component, router = muc
    join(component, ALICE, "alice")
    sent = take(router)
    self_presence = to(sent, ALICE, "presence")[0]
    assert self_presence["from"] == f"{ROOM}/alice"
    assert {"110", "201"} <= codes(self_presence)
    item = next(next(self_presence.elements(NS_MUC_USER, "x")).elements(NS_MUC_USER, "item"))
    assert (item["affiliation"], item["role"]) == ("owner", "moderator")
    assert any(s.name == "message" and next(s.elements(None, "subject"), None) is not None for s in sent)

    join(component, BOB, "bob")
    sent = take(router)
    assert [p["from"] for p in to(sent, BOB, "presence")] == [f"{ROOM}/alice", f"{ROOM}/bob"]
    alice_sees = to(sent, ALICE, "presence")[0]
    assert alice_sees["from"] == f"{ROOM}/bob"
    assert "110" not in codes(alice_sees)
    bob_self = to(sent, BOB, "presence")[1]
    assert "201" not in codes(bob_self) and "110" in codes(bob_self)

    component.receive(xml(f"<message from='{BOB}' to='{ROOM}' type='groupchat' id='m1'><body>hi</body></message>"))
    sent = take(router)
    assert sorted(s["to"] for s in sent) == [ALICE, BOB]
    for s in sent:
        assert s["from"] == f"{ROOM}/bob" and str(s.body) == "hi"
        sid = next(s.elements("urn:xmpp:sid:0", "stanza-id"))
        assert sid["by"] == ROOM

    # nick conflict, then history on join
    join(component, CAROL, "bob")
    assert error_condition(take(router)[0]) == "conflict"
    join(component, CAROL, "carol", "<history maxstanzas='5'/>")
    sent = to(take(router), CAROL, "message")
    assert str(sent[0].body) == "hi" and next(sent[0].elements("urn:xmpp:delay", "delay"), None) is not None

    component.receive(xml(f"<presence from='{BOB}' to='{ROOM}/bob' type='unavailable'/>"))
    sent = take(router)
    assert {s["to"] for s in sent} == {ALICE, BOB, CAROL}
    assert "110" in codes(to(sent, BOB)[0])
    assert "bob" not in component.rooms[ROOM].occupants


def test_private_messages_and_self_ping(muc: Any) -> None:
    component, router = muc
    join(component, ALICE, "alice")
    join(component, BOB, "bob")
    take(router)
    component.receive(xml(f"<message from='{ALICE}' to='{ROOM}/bob' type='chat'><body>psst</body></message>"))
    [pm] = take(router)
    assert (pm["to"], pm["from"]) == (BOB, f"{ROOM}/alice")
    component.receive(xml(f"<iq from='{BOB}' to='{ROOM}/bob' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>"))
    [reply] = take(router)
    assert reply["type"] == "result"
    component.receive(xml(f"<iq from='{CAROL}' to='{ROOM}/bob' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>"))
    assert error_condition(take(router)[0]) == "not-acceptable"
    # a bounced presence removes the ghost
    component.receive(xml(f"<presence from='{BOB}' to='{ROOM}/bob' type='error'><error type='cancel'>"
                          "<remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>"))
    assert "bob" not in component.rooms[ROOM].occupants
    component.receive(xml(f"<iq from='{BOB}' to='{ROOM}/bob' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>"))
    assert error_condition(take(router)[-1]) == "not-acceptable"


def test_kick_and_ban(muc: Any) -> None:
    component, router = muc
    join(component, ALICE, "alice")
    join(component, BOB, "bob")
    take(router)
    component.receive(xml(f"<iq from='{BOB}' to='{ROOM}' type='set' id='k'><query xmlns='{NS_MUC_ADMIN}'>"
                          "<item nick='alice' role='none'/></query></iq>"))
    assert error_condition(take(router)[0]) == "forbidden"
    component.receive(xml(f"<iq from='{ALICE}' to='{ROOM}' type='set' id='k'><query xmlns='{NS_MUC_ADMIN}'>"
                          "<item nick='bob' role='none'><reason>bye</reason></item></query></iq>"))
    sent = take(router)
    kicked = to(sent, BOB, "presence")[0]
    assert kicked["type"] == "unavailable" and {"307", "110"} <= codes(kicked)
    assert to(sent, ALICE, "iq")[0]["type"] == "result"
    join(component, BOB, "bob")
    take(router)
    component.receive(xml(f"<iq from='{ALICE}' to='{ROOM}' type='set' id='b'><query xmlns='{NS_MUC_ADMIN}'>"
                          "<item jid='bob@example.org' affiliation='outcast'/></query></iq>"))
    assert "301" in codes(to(take(router), BOB, "presence")[0])
    join(component, BOB, "bob")
    assert error_condition(take(router)[0]) == "forbidden"
    component.receive(xml(f"<iq from='{ALICE}' to='{ROOM}' type='get' id='l'><query xmlns='{NS_MUC_ADMIN}'>"
                          "<item affiliation='outcast'/></query></iq>"))
    [result] = take(router)
    assert [i["jid"] for i in result.query.elements()] == ["bob@example.org"]


def configure(component: MultiUserChat, who: str, **values: str) -> None:
    fields = "".join(f"<field var='muc#roomconfig_{k}'><value>{v}</value></field>" for k, v in values.items())
    component.receive(xml(f"<iq from='{who}' to='{ROOM}' type='set' id='c'><query xmlns='{NS_MUC_OWNER}'>"
                          "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
                          "<value>http://jabber.org/protocol/muc#roomconfig</value></field>"
                          f"{fields}</x></query></iq>"))


def test_owner_config_password_membersonly_persistence(muc: Any) -> None:
    component, router = muc
    join(component, ALICE, "alice")
    take(router)
    component.receive(xml(f"<iq from='{ALICE}' to='{ROOM}' type='get' id='g'><query xmlns='{NS_MUC_OWNER}'/></iq>"))
    [form] = take(router)
    assert form["type"] == "result"
    configure(component, BOB, roomsecret="s3cret")
    assert error_condition(take(router)[0]) == "forbidden"
    configure(component, ALICE, roomsecret="s3cret", persistentroom="1", enablelogging="1")
    assert to(take(router), ALICE, "iq")[0]["type"] == "result"
    join(component, BOB, "bob", "<password>wrong</password>")
    assert error_condition(take(router)[0]) == "not-authorized"
    join(component, BOB, "bob", "<password>s3cret</password>")
    assert "170" in codes(to(take(router), BOB, "presence")[-1])
    configure(component, ALICE, membersonly="1")
    join(component, CAROL, "carol", "<password>s3cret</password>")
    assert error_condition(take(router)[-1]) == "registration-required"
    # disco
    component.receive(xml(f"<iq from='{CAROL}' to='{ROOM}' type='get' id='d'>"
                          "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>"))
    [info] = take(router)
    features = {f["var"] for f in info.query.elements() if f.name == "feature"}
    assert {"muc_persistent", "muc_passwordprotected", "muc_membersonly", "urn:xmpp:mam:2"} <= features
    # persistent: survives a restart of the component
    saved = component.room_store
    router2 = FakeRouter()
    again = MultiUserChat(SERVICE)
    again.room_store = saved
    again.attach(router2)
    assert again.rooms[ROOM].config.persistentroom and again.rooms[ROOM].affiliations["alice@example.org"] == "owner"
    # destroy
    component.receive(xml(f"<iq from='{ALICE}' to='{ROOM}' type='set' id='x'><query xmlns='{NS_MUC_OWNER}'>"
                          "<destroy><reason>done</reason></destroy></query></iq>"))
    sent = take(router)
    assert all(s["type"] in ("unavailable", "result") for s in sent)
    assert ROOM not in component.rooms


def test_room_mam_query(muc: Any) -> None:
    component, router = muc
    join(component, ALICE, "alice")
    configure(component, ALICE, enablelogging="1")
    for i in range(5):
        component.receive(xml(f"<message from='{ALICE}' to='{ROOM}' type='groupchat'><body>m{i}</body></message>"))
    take(router)
    component.receive(xml(f"<iq from='{BOB}' to='{ROOM}' type='set' id='q'><query xmlns='urn:xmpp:mam:2' queryid='f'>"
                          "<set xmlns='http://jabber.org/protocol/rsm'><max>3</max></set></query></iq>"))
    sent = take(router)
    results = [s for s in sent if s.name == "message"]
    assert len(results) == 3
    fin = [s for s in sent if s.name == "iq"][0]
    assert fin["type"] == "result"
    last = str(next(fin.fin.set.elements("http://jabber.org/protocol/rsm", "last")))
    component.receive(xml(f"<iq from='{BOB}' to='{ROOM}' type='set' id='q2'><query xmlns='urn:xmpp:mam:2'>"
                          f"<set xmlns='http://jabber.org/protocol/rsm'><after>{last}</after></set></query></iq>"))
    sent = take(router)
    bodies = [str(next(s.elements("urn:xmpp:mam:2", "result")).forwarded.message.body)
              for s in sent if s.name == "message"]
    assert bodies == ["m3", "m4"]
    assert [s for s in sent if s.name == "iq"][0].fin["complete"] == "true"


def test_service_disco_and_errors(muc: Any) -> None:
    component, router = muc
    join(component, ALICE, "alice")
    take(router)
    component.receive(xml(f"<iq from='{BOB}' to='{SERVICE}' type='get' id='i'>"
                          "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>"))
    [items] = take(router)
    assert [i["jid"] for i in items.query.elements()] == [ROOM]
    component.receive(xml(f"<message from='{BOB}' to='{ROOM}' type='groupchat'><body>x</body></message>"))
    assert error_condition(take(router)[0]) == "not-acceptable"
    component.receive(xml(f"<iq from='{BOB}' to='nope@{SERVICE}' type='get' id='i'>"
                          "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>"))
    assert error_condition(take(router)[0]) == "item-not-found"
    component.receive(xml(f"<presence from='{ALICE}' to='{ROOM}/alice' type='unavailable'/>"))
    take(router)
    assert ROOM not in component.rooms       # temporary room gone with its last occupant


def test_iq_between_occupants_is_forwarded(muc: Any) -> None:
    component, router = muc
    join(component, ALICE, "alice")
    join(component, BOB, "bob")
    take(router)
    component.receive(xml(f"<iq from='{ALICE}' to='{ROOM}/bob' type='get' id='v1'><vCard xmlns='vcard-temp'/></iq>"))
    [out] = take(router)
    assert (out["from"], out["to"], out.vCard.uri) == (f"{ROOM}/alice", BOB, "vcard-temp")
    component.receive(xml(f"<iq from='{BOB}' to='{ROOM}/alice' type='result' id='{out['id']}'>"
                          "<vCard xmlns='vcard-temp'><FN>Bob</FN></vCard></iq>"))
    [back] = take(router)
    assert (back["from"], back["to"], back["id"], back["type"]) == (f"{ROOM}/bob", ALICE, "v1", "result")
    # a non-occupant may not query occupants
    component.receive(xml(f"<iq from='{CAROL}' to='{ROOM}/bob' type='get' id='v2'><vCard xmlns='vcard-temp'/></iq>"))
    assert error_condition(take(router)[0]) == "not-acceptable"


def test_message_errors_remove_only_gone_occupants(muc: Any) -> None:
    component, router = muc
    join(component, ALICE, "alice")
    join(component, BOB, "bob")
    take(router)
    component.receive(xml(f"<message from='{BOB}' to='{ROOM}' type='error'><error type='modify'>"
                          "<not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"))
    assert "bob" in component.rooms[ROOM].occupants
    component.receive(xml(f"<message from='{BOB}' to='{ROOM}' type='error'><error type='cancel'>"
                          "<remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"))
    assert "bob" not in component.rooms[ROOM].occupants
    [gone] = take(router)
    assert gone["to"] == ALICE and gone["type"] == "unavailable"


def test_nick_change_subject_moderation_and_max_users(muc: Any) -> None:
    component, router = muc
    join(component, ALICE, "alice")
    join(component, BOB, "bob")
    take(router)
    # nick change: 303 with the new nick, then the new presence
    join(component, BOB, "robert")
    sent = take(router)
    old = to(sent, ALICE, "presence")[0]
    assert old["type"] == "unavailable" and "303" in codes(old)
    assert next(next(old.elements(NS_MUC_USER, "x")).elements(NS_MUC_USER, "item"))["nick"] == "robert"
    assert to(sent, ALICE, "presence")[1]["from"] == f"{ROOM}/robert"
    # subject: participants may not change it by default, moderators may
    component.receive(xml(f"<message from='{BOB}' to='{ROOM}' type='groupchat'><subject>mine</subject></message>"))
    assert error_condition(take(router)[0]) == "forbidden"
    component.receive(xml(f"<message from='{ALICE}' to='{ROOM}' type='groupchat'><subject>news</subject></message>"))
    assert len(take(router)) == 2
    join(component, CAROL, "carol")
    subject = [s for s in to(take(router), CAROL, "message") if next(s.elements(None, "subject"), None)]
    assert str(next(subject[0].elements(None, "subject"))) == "news" and subject[0]["from"] == f"{ROOM}/alice"
    # moderated: a newcomer without affiliation is a visitor and has no voice until granted
    configure(component, ALICE, moderatedroom="1", maxusers="")
    take(router)
    component.receive(xml(f"<presence from='{CAROL}' to='{ROOM}/carol' type='unavailable'/>"))
    join(component, CAROL, "carol")
    take(router)
    assert component.rooms[ROOM].occupants["carol"].role == "visitor"
    component.receive(xml(f"<message from='{CAROL}' to='{ROOM}' type='groupchat'><body>hey</body></message>"))
    assert error_condition(take(router)[0]) == "forbidden"
    component.receive(xml(f"<iq from='{ALICE}' to='{ROOM}' type='set' id='v'><query xmlns='{NS_MUC_ADMIN}'>"
                          "<item nick='carol' role='participant'/></query></iq>"))
    take(router)
    component.receive(xml(f"<message from='{CAROL}' to='{ROOM}' type='groupchat'><body>hey</body></message>"))
    assert len(take(router)) == 3
    # max users
    configure(component, ALICE, maxusers="10")
    take(router)
    component.rooms[ROOM].config.maxusers = 3
    join(component, "dave@example.org/d", "dave")
    assert error_condition(take(router)[0]) == "service-unavailable"


def test_limits_rooms_per_service_and_message_size() -> None:
    router = FakeRouter()
    component = MultiUserChat(SERVICE, MucConfig(max_rooms=1, message_size=200, lock_new_rooms=False))
    component.attach(router, Stores())
    join(component, ALICE, "alice")
    take(router)
    component.receive(xml(f"<presence from='{ALICE}' to='other@{SERVICE}/alice'><x xmlns='{NS_MUC}'/></presence>"))
    assert error_condition(take(router)[0]) == "resource-constraint"
    assert f"other@{SERVICE}" not in component.rooms
    component.receive(xml(f"<message from='{ALICE}' to='{ROOM}' type='groupchat'><body>{'x' * 300}</body></message>"))
    assert error_condition(take(router)[0]) == "not-acceptable"


def test_new_rooms_are_locked_until_configured() -> None:
    router = FakeRouter()
    component = MultiUserChat(SERVICE)
    component.attach(router, Stores())
    join(component, ALICE, "alice")
    assert "201" in codes(to(take(router), ALICE, "presence")[0])
    join(component, BOB, "bob")
    assert error_condition(take(router)[0]) == "item-not-found"
    # an instant room: an empty submitted form
    component.receive(xml(f"<iq from='{ALICE}' to='{ROOM}' type='set' id='c'><query xmlns='{NS_MUC_OWNER}'>"
                          "<x xmlns='jabber:x:data' type='submit'/></query></iq>"))
    assert to(take(router), ALICE, "iq")[0]["type"] == "result"
    join(component, BOB, "bob")
    assert "110" in codes(to(take(router), BOB, "presence")[-1])
    # cancelling the configuration of a new locked room destroys it
    component.receive(xml(f"<presence from='{ALICE}' to='new@{SERVICE}/alice'><x xmlns='{NS_MUC}'/></presence>"))
    take(router)
    component.receive(xml(f"<iq from='{ALICE}' to='new@{SERVICE}' type='set' id='c'><query xmlns='{NS_MUC_OWNER}'>"
                          "<x xmlns='jabber:x:data' type='cancel'/></query></iq>"))
    take(router)
    assert f"new@{SERVICE}" not in component.rooms


def test_rejoin_and_members_only_switch(muc: Any) -> None:
    component, router = muc
    join(component, ALICE, "alice")
    join(component, BOB, "bob")
    take(router)
    join(component, BOB, "bob")            # a client that believes it is out joins again
    sent = to(take(router), BOB)
    assert [s["from"] for s in sent if s.name == "presence"] == [f"{ROOM}/alice", f"{ROOM}/bob"]
    assert any(next(s.elements(None, "subject"), None) is not None for s in sent if s.name == "message")
    configure(component, ALICE, membersonly="1")
    removed = to(take(router), BOB, "presence")[0]
    assert removed["type"] == "unavailable" and "322" in codes(removed)
    assert "bob" not in component.rooms[ROOM].occupants and "alice" in component.rooms[ROOM].occupants
