"""Message Archive Management (XEP-0313), stanza ids (XEP-0359), archiving preferences (XEP-0441)."""

from __future__ import annotations

import pytest
from twisted.internet import defer

from tests.support.sm_harness import SMHarness, condition
from tigasepy.config import ConfigError, section_from_dict
from tigasepy.extensions.disco import ServiceDiscovery
from tigasepy.extensions.mam import (
    NS_FORWARD, NS_MAM, NS_MAM_EXTENDED, NS_RSM, NS_SID, MamConfig, MessageArchive, archivable, parse_stamp,
    strip_stanza_ids,
)
from tigasepy.extensions.message import MessageDelivery
from tigasepy.extensions.offline import OfflineConfig, OfflineMessages
from tigasepy.sm.events import AccountEvent, AccountRemoved
from tigasepy.storage.interfaces import ArchiveQuery, IAccountStore, IArchiveStore, IOfflineStore, IRosterStore, RosterItem
from tigasepy.storage.memory import MemoryAccountStore, MemoryArchiveStore, MemoryOfflineStore, MemoryRosterStore
from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp import namespaces as ns

ALICE, BOB = "alice@example.org", "bob@example.org"
ALL = ArchiveQuery()


@pytest.fixture
def stores():
    accounts = MemoryAccountStore()
    for user in ("alice", "bob", "carol"):
        accounts.create(f"{user}@example.org", [])
    return {IAccountStore: accounts, IRosterStore: MemoryRosterStore(), IOfflineStore: MemoryOfflineStore(),
            IArchiveStore: MemoryArchiveStore()}


def make_world(stores, **config):
    return SMHarness([(ServiceDiscovery, None), (MessageDelivery, None), (OfflineMessages, OfflineConfig()),
                      (MessageArchive, MamConfig(**config))], stores)


@pytest.fixture
def world(stores):
    return make_world(stores)


def online(world, full, priority=0):
    session = world.connect(full)
    bound = world.sm.session(session.jid.full())
    bound.available, bound.priority = True, priority
    return session


def archive(stores, owner):
    return stores[IArchiveStore].query(owner, ALL, 1000).result


def chat(world, sender, to, body="hi", kind="chat", extra=""):
    world.send(sender, f"<message to='{to}' type='{kind}' id='m1'><body>{body}</body>{extra}</message>")


def iq(world, session, kind, payload, to=None):
    """Send an IQ; returns (the IQ reply, the messages that came before it)."""
    session.take()
    address = f" to='{to}'" if to else ""
    world.send(session, f"<iq type='{kind}' id='q1'{address}>{payload}</iq>")
    sent = session.take()
    replies = [s for s in sent if s.name == "iq"]
    assert len(replies) == 1, [s.toXml() for s in sent]
    assert sent[-1] is replies[0], "the IQ reply comes after the results"
    return replies[0], [s for s in sent if s.name == "message"]


def form(**fields):
    out = [f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value></field>"]
    for var, values in fields.items():
        values = values if isinstance(values, (list, tuple)) else [values]
        out.append(f"<field var='{var.rstrip('_').replace('_', '-')}'>" + "".join(f"<value>{v}</value>" for v in values) + "</field>")
    return "".join(out) + "</x>"


def rsm(**parts):
    inner = "".join(f"<{k}/>" if v is None else f"<{k}>{v}</{k}>" for k, v in parts.items())
    return f"<set xmlns='{NS_RSM}'>{inner}</set>"


def query(world, session, x="", paging="", queryid="q", extra=""):
    reply, results = iq(world, session, "set", f"<query xmlns='{NS_MAM}' queryid='{queryid}'>{x}{paging}{extra}</query>")
    return reply, results


def bodies(results):
    out = []
    for message in results:
        [result] = message.elements(NS_MAM, "result")
        [forwarded] = result.elements(NS_FORWARD, "forwarded")
        inner = [c for c in forwarded.elements() if c.name == "message"][0]
        out.append(str(inner.body))
    return out


def fin_of(reply):
    [fin] = reply.elements(NS_MAM, "fin")
    [rset] = fin.elements(NS_RSM, "set")
    parts = {c.name: c for c in rset.elements()}
    return fin, parts


def send_many(world, sender, to, count, start=0):
    for n in range(start, start + count):
        chat(world, sender, to, body=f"m{n}")


# -- archiving ---------------------------------------------------------------------------

def test_chat_is_archived_for_sender_and_recipient_and_the_delivered_copy_has_the_recipients_id(world, stores):
    alice, bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    world.clock.advance(1000)
    chat(world, alice, BOB, "hello")
    [delivered] = bob.take()
    [sid] = delivered.elements(NS_SID, "stanza-id")
    [bobs] = archive(stores, BOB)
    [alices] = archive(stores, ALICE)
    assert (sid["by"], sid["id"]) == (BOB, bobs.id)
    assert bobs.with_jid == f"{ALICE}/a" and alices.with_jid == BOB
    assert bobs.stamp == alices.stamp == 1000.0
    assert alices.id != bobs.id
    stored = parse_stanza(alices.xml)
    assert (stored["from"], stored["to"], str(stored.body)) == (f"{ALICE}/a", BOB, "hello")
    assert not list(stored.elements(NS_SID, "stanza-id")), "the sender's copy leaves with no stanza-id of ours"
    assert list(parse_stanza(bobs.xml).elements(NS_SID, "stanza-id"))


def test_the_message_leaving_for_the_contact_has_no_stanza_id_of_the_sender(world):
    alice = online(world, f"{ALICE}/a")
    chat(world, alice, "romeo@remote.example")
    [out] = world.router.routed
    assert not list(out.elements(NS_SID, "stanza-id"))


def test_forged_stanza_ids_by_the_recipient_are_stripped_others_kept(world, stores):
    alice, bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    forged = (f"<stanza-id xmlns='{NS_SID}' by='{BOB}' id='fake'/><stanza-id xmlns='{NS_SID}' by='Bob@Example.org' id='fake2'/>"
              f"<stanza-id xmlns='{NS_SID}' by='room@muc.example.org' id='keep'/>")
    chat(world, alice, BOB, extra=forged)
    [delivered] = bob.take()
    ids = sorted((s["by"], s["id"]) for s in delivered.elements(NS_SID, "stanza-id"))
    [bobs] = archive(stores, BOB)
    assert ids == sorted([(BOB, bobs.id), ("room@muc.example.org", "keep")])


def test_forged_stanza_ids_are_stripped_from_messages_that_are_not_archived(world):
    alice, bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    world.send(alice, f"<message to='{BOB}' type='headline'><body>x</body><stanza-id xmlns='{NS_SID}' by='{BOB}' id='f'/></message>")
    [delivered] = bob.take()
    assert not list(delivered.elements(NS_SID, "stanza-id"))


def test_stanza_id_claiming_the_senders_own_archive_is_stripped_on_sending(world):
    alice = online(world, f"{ALICE}/a")
    chat(world, alice, "romeo@remote.example", extra=f"<stanza-id xmlns='{NS_SID}' by='{ALICE}' id='f'/>")
    [out] = world.router.routed
    assert not list(out.elements(NS_SID, "stanza-id"))


def test_incoming_message_from_a_remote_server_is_archived(world, stores):
    bob = online(world, f"{BOB}/b")
    world.sm.deliver(parse_stanza(f"<message from='romeo@remote.example/x' to='{BOB}' type='chat'><body>yo</body></message>"))
    [delivered] = bob.take()
    [bobs] = archive(stores, BOB)
    assert bobs.with_jid == "romeo@remote.example/x"
    assert [s["id"] for s in delivered.elements(NS_SID, "stanza-id")] == [bobs.id]


@pytest.mark.parametrize("stanza,archived", [
    ("<message type='chat'><body>x</body></message>", True),
    ("<message><body>x</body></message>", True),
    ("<message type='normal'><body>x</body></message>", True),
    ("<message type='groupchat'><body>x</body></message>", False),
    ("<message type='headline'><body>x</body></message>", False),
    ("<message type='error'><body>x</body></message>", False),
    ("<message type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>", False),
    ("<message type='chat'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>", False),
    ("<message type='chat'><body>x</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>", False),
    ("<message type='chat'><store xmlns='urn:xmpp:hints'/><displayed xmlns='urn:xmpp:chat-markers:0' id='1'/></message>", True),
])
def test_archivable_messages(stanza, archived):
    element = parse_stanza(stanza)
    assert archivable(element, element.getAttribute("type") or "normal") is archived


def test_chat_state_only_messages_are_not_archived(world, stores):
    alice, bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    world.send(alice, f"<message to='{BOB}' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    [delivered] = bob.take()
    assert archive(stores, BOB) == archive(stores, ALICE) == []
    assert not list(delivered.elements(NS_SID, "stanza-id"))


def test_message_kept_offline_is_archived_and_the_offline_copy_has_the_stanza_id(world, stores):
    alice = online(world, f"{ALICE}/a")
    chat(world, alice, BOB, "later")
    [bobs] = archive(stores, BOB)
    [kept] = stores[IOfflineStore].fetch(BOB).result
    stored = parse_stanza(kept.xml)
    assert [s["id"] for s in stored.elements(NS_SID, "stanza-id")] == [bobs.id]


def test_message_to_an_unknown_account_is_archived_only_by_the_sender(world, stores):
    alice = online(world, f"{ALICE}/a")
    chat(world, alice, "nobody@example.org")
    [error] = alice.take()
    assert condition(error) == "service-unavailable"
    assert archive(stores, "nobody@example.org") == []
    assert len(archive(stores, ALICE)) == 1


def test_message_to_oneself_is_archived_once_and_stamped(world, stores):
    alice = online(world, f"{ALICE}/a")
    other = online(world, f"{ALICE}/b")
    chat(world, alice, ALICE, "note to self")
    [entry] = archive(stores, ALICE)
    assert entry.with_jid == ALICE
    got = [s for s in other.take() + alice.take() if s.name == "message"]
    assert got, "delivered to the account's resources"
    for message in got:
        assert [(s["by"], s["id"]) for s in message.elements(NS_SID, "stanza-id")] == [(ALICE, entry.id)]


def test_ids_are_unpredictable_and_unique(world, stores):
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    send_many(world, alice, BOB, 20)
    ids = [m.id for m in archive(stores, ALICE)] + [m.id for m in archive(stores, BOB)]
    assert len(set(ids)) == 40
    assert all(len(i) >= 16 and not i.isdigit() for i in ids)


def test_archives_keep_arrival_order_even_while_preferences_load_slowly(stores):
    slow = SlowPrefs(stores[IArchiveStore])
    stores[IArchiveStore] = slow
    world = make_world(stores)
    alice, bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    send_many(world, alice, BOB, 3)
    assert bob.take() == [], "held until the preferences are known"
    slow.release_all()
    got = bob.take()
    assert [str(m.body) for m in got] == ["m0", "m1", "m2"]
    assert [m.xml for m in archive(stores, BOB)] == [m.xml for m in archive(stores, BOB)]
    assert [str(parse_stanza(m.xml).body) for m in archive(stores, BOB)] == ["m0", "m1", "m2"]
    assert [str(parse_stanza(m.xml).body) for m in archive(stores, ALICE)] == ["m0", "m1", "m2"]
    send_many(world, alice, BOB, 1, start=3)
    assert [str(m.body) for m in bob.take()] == ["m3"], "once known, no waiting"


def test_a_long_queue_behind_a_slow_preference_read_costs_no_stack(stores):
    slow = SlowPrefs(stores[IArchiveStore])
    stores[IArchiveStore] = slow
    world = make_world(stores)
    alice, bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    send_many(world, alice, BOB, 1500)
    slow.release_all()
    assert [str(m.body) for m in bob.take()] == [f"m{n}" for n in range(1500)]
    assert stores[IArchiveStore].count(BOB, ALL).result == 1500


def test_preferences_unavailable_means_deliver_without_archiving(stores):
    stores[IArchiveStore] = BrokenPrefs(stores[IArchiveStore])
    world = make_world(stores)
    alice, bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    chat(world, alice, BOB)
    [delivered] = bob.take()
    assert not list(delivered.elements(NS_SID, "stanza-id"))
    assert alice.take() == []


class SlowPrefs:
    """An archive store whose preference reads wait until released."""

    def __init__(self, store):
        self._store = store
        self.waiting = []

    def get_prefs(self, owner):
        d = defer.Deferred()
        self.waiting.append((d, owner))
        return d

    def release_all(self):
        while self.waiting:
            d, owner = self.waiting.pop(0)
            self._store.get_prefs(owner).chainDeferred(d)

    def __getattr__(self, name):
        return getattr(self._store, name)


class BrokenPrefs(SlowPrefs):
    """An archive store whose preferences cannot be read."""

    def get_prefs(self, owner):
        return defer.fail(RuntimeError("database down"))


# -- queries -----------------------------------------------------------------------------

def test_query_returns_everything_in_order_with_fin(world):
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    send_many(world, alice, BOB, 3)
    reply, results = query(world, alice)
    assert reply["type"] == "result"
    assert bodies(results) == ["m0", "m1", "m2"]
    for message in results:
        assert (message["to"], message["from"]) == (f"{ALICE}/a", ALICE)
        [result] = message.elements(NS_MAM, "result")
        assert result["queryid"] == "q"
        [forwarded] = result.elements(NS_FORWARD, "forwarded")
        [delay] = forwarded.elements(ns.DELAY, "delay")
        assert delay["stamp"].endswith("Z")
        inner = [c for c in forwarded.elements() if c.name == "message"][0]
        assert "xmlns='jabber:client'" in inner.toXml() or inner.uri is None
    fin, parts = fin_of(reply)
    assert fin["complete"] == "true"
    ids = [next(m.elements(NS_MAM, "result"))["id"] for m in results]
    assert (str(parts["first"]), parts["first"]["index"], str(parts["last"]), str(parts["count"])) == (
        ids[0], "0", ids[-1], "3")


def test_empty_archive_gives_a_complete_empty_fin(world):
    alice = online(world, f"{ALICE}/a")
    reply, results = query(world, alice)
    fin, parts = fin_of(reply)
    assert results == [] and fin["complete"] == "true"
    assert set(parts) == {"count"} and str(parts["count"]) == "0"


def test_paging_forwards_returns_every_message_once_in_order(world):
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    send_many(world, alice, BOB, 7)
    seen, after, pages = [], None, 0
    while True:
        paging = rsm(max=3, after=after) if after else rsm(max=3)
        reply, results = query(world, alice, paging=paging)
        pages += 1
        seen += bodies(results)
        fin, parts = fin_of(reply)
        assert str(parts["count"]) == "7"
        if fin.getAttribute("complete") == "true":
            break
        assert str(parts["first"]) and parts["first"]["index"] == str(len(seen) - len(results))
        after = str(parts["last"])
    assert seen == [f"m{n}" for n in range(7)] and pages == 3


def test_last_page_and_paging_backwards(world):
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    send_many(world, alice, BOB, 7)
    reply, results = query(world, alice, paging=rsm(max=3, before=None))
    assert bodies(results) == ["m4", "m5", "m6"], "the last page, still oldest first"
    fin, parts = fin_of(reply)
    assert fin.getAttribute("complete") != "true" and parts["first"]["index"] == "4"
    reply, results = query(world, alice, paging=rsm(max=3, before=str(parts["first"])))
    assert bodies(results) == ["m1", "m2", "m3"]
    fin, parts = fin_of(reply)
    reply, results = query(world, alice, paging=rsm(max=3, before=str(parts["first"])))
    assert bodies(results) == ["m0"]
    fin, _parts = fin_of(reply)
    assert fin["complete"] == "true"


def test_index_jumps_into_the_result_set(world):
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    send_many(world, alice, BOB, 5)
    reply, results = query(world, alice, paging=rsm(max=2, index=2))
    assert bodies(results) == ["m2", "m3"]
    _fin, parts = fin_of(reply)
    assert parts["first"]["index"] == "2"
    reply, results = query(world, alice, paging=rsm(max=2, index=9))
    assert results == [] and fin_of(reply)[0]["complete"] == "true"


def test_max_zero_gives_the_count_only(world):
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    send_many(world, alice, BOB, 4)
    reply, results = query(world, alice, paging=rsm(max=0))
    fin, parts = fin_of(reply)
    assert results == [] and set(parts) == {"count"} and str(parts["count"]) == "4"
    assert fin.getAttribute("complete") != "true"


def test_page_size_is_capped_and_defaulted(stores):
    world = make_world(stores, default_page_size=2, max_page_size=3)
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    send_many(world, alice, BOB, 5)
    _reply, results = query(world, alice)
    assert len(results) == 2
    _reply, results = query(world, alice, paging=rsm(max=100))
    assert len(results) == 3


def test_flip_page_reverses_the_order_of_one_page(world):
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    send_many(world, alice, BOB, 5)
    reply, results = query(world, alice, paging=rsm(max=3, before=None), extra="<flip-page/>")
    assert bodies(results) == ["m4", "m3", "m2"]
    _fin, parts = fin_of(reply)
    assert str(parts["first"]) == next(results[-1].elements(NS_MAM, "result"))["id"]


def test_with_filters_by_bare_and_full_jid(world):
    alice = online(world, f"{ALICE}/a")
    bob, carol = online(world, f"{BOB}/b"), online(world, "carol@example.org/c")
    chat(world, alice, BOB, "to bob")
    chat(world, alice, "carol@example.org", "to carol")
    chat(world, bob, ALICE, "from bob")
    chat(world, alice, f"{BOB}/b", "to bob's phone")
    _reply, results = query(world, alice, x=form(with_=BOB))
    assert bodies(results) == ["to bob", "from bob", "to bob's phone"]
    _reply, results = query(world, alice, x=form(with_=f"{BOB}/b"))
    assert bodies(results) == ["from bob", "to bob's phone"]
    _reply, results = query(world, alice, x=form(with_="Carol@Example.org"))
    assert bodies(results) == ["to carol"]
    assert carol.take()


def test_with_ones_own_jid_returns_only_messages_to_oneself(world):
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    chat(world, alice, BOB, "to bob")
    chat(world, alice, ALICE, "to me")
    _reply, results = query(world, alice, x=form(with_=ALICE))
    assert bodies(results) == ["to me"]


def test_start_and_end_filter_by_time(world):
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    for n, moment in enumerate((1_600_000_000, 1_600_000_060, 1_600_000_120)):
        world.clock.advance(moment - world.clock.seconds())
        chat(world, alice, BOB, f"m{n}")
    _reply, results = query(world, alice, x=form(start="2020-09-13T12:27:00Z"))
    assert bodies(results) == ["m1", "m2"]
    _reply, results = query(world, alice, x=form(start="2020-09-13T12:27:00Z", end="2020-09-13T12:27:59.999+00:00"))
    assert bodies(results) == ["m1"]
    _reply, results = query(world, alice, x=form(end="2020-09-13T14:26:40+02:00"))
    assert bodies(results) == ["m0"], "offsets are honoured and the end is inclusive"


def test_after_id_before_id_and_ids(world):
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    send_many(world, alice, BOB, 5)
    _reply, results = query(world, alice)
    ids = [next(m.elements(NS_MAM, "result"))["id"] for m in results]
    _reply, got = query(world, alice, x=form(after_id=ids[0], before_id=ids[3]))
    assert bodies(got) == ["m1", "m2"]
    _reply, got = query(world, alice, x=form(after_id=ids[2]))
    assert bodies(got) == ["m3", "m4"]
    reply, got = query(world, alice, x=form(ids=[ids[4], ids[1]]))
    assert bodies(got) == ["m1", "m4"]
    assert str(fin_of(reply)[1]["count"]) == "2"


@pytest.mark.parametrize("x,paging", [
    (form(after_id="nope"), ""),
    (form(before_id="nope"), ""),
    (form(ids=["nope"]), ""),
    ("", rsm(max=2, after="nope")),
    ("", rsm(max=2, before="nope")),
])
def test_unknown_archive_ids_are_item_not_found(world, x, paging):
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    send_many(world, alice, BOB, 2)
    reply, results = query(world, alice, x=x, paging=paging)
    assert condition(reply) == "item-not-found" and results == []


def test_another_accounts_ids_are_unknown_here(world):
    alice, bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    chat(world, alice, BOB)
    [delivered] = bob.take()
    bobs_id = next(delivered.elements(NS_SID, "stanza-id"))["id"]
    reply, _results = query(world, alice, x=form(ids=[bobs_id]))
    assert condition(reply) == "item-not-found"


@pytest.mark.parametrize("x,paging", [
    (form(start="yesterday"), ""),
    (form(start="2020-01-01"), ""),
    (form(end="2020-01-01T00:00:00"), ""),
    (form(with_="@@bad@@"), ""),
    (form(with_=["a@example.org", "b@example.org"]), ""),
    ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:1</value></field></x>", ""),
    ("<x xmlns='jabber:x:data' type='submit'><field var='with'><value>a@example.org</value></field></x>", ""),
    ("<x xmlns='jabber:x:data' type='form'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field></x>", ""),
    ("", rsm(max="ten")),
    ("", rsm(max=-1)),
    ("", rsm(max=1, after="")),
    ("", f"<set xmlns='{NS_RSM}'><max>1</max><after>x</after><before>y</before></set>"),
    ("", f"<set xmlns='{NS_RSM}'><max>1</max><max>2</max></set>"),
    ("", rsm(max=1, index="x")),
])
def test_malformed_queries_are_bad_request(world, x, paging):
    alice = online(world, f"{ALICE}/a")
    reply, results = query(world, alice, x=x, paging=paging)
    assert condition(reply) == "bad-request" and results == []


def test_unknown_form_field_is_feature_not_implemented(world):
    alice = online(world, f"{ALICE}/a")
    reply, _results = query(world, alice, x=form(**{"include_groupchat": "true"}))
    assert condition(reply) == "feature-not-implemented"


def test_someone_elses_archive_is_forbidden(world, stores):
    alice, bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    chat(world, bob, ALICE)
    alice.take()
    for payload in (f"<query xmlns='{NS_MAM}'/>", f"<metadata xmlns='{NS_MAM}'/>", f"<prefs xmlns='{NS_MAM}'/>"):
        for kind in ("get", "set") if "query" in payload else ("get",):
            reply, results = iq(world, alice, kind, payload, to=BOB)
            assert condition(reply) == "forbidden" and results == [], payload
    reply, _ = iq(world, alice, "set", f"<prefs xmlns='{NS_MAM}' default='never'/>", to=BOB)
    assert condition(reply) == "forbidden"
    assert stores[IArchiveStore].get_prefs(BOB).result is None
    assert not [m for m in bob.take() if list(m.elements(NS_MAM, "result"))]


def test_query_addressed_to_the_own_bare_jid_works(world):
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    chat(world, alice, BOB)
    reply, results = iq(world, alice, "set", f"<query xmlns='{NS_MAM}'/>", to=ALICE)
    assert reply["type"] == "result" and len(results) == 1
    [result] = results[0].elements(NS_MAM, "result")
    assert result.getAttribute("queryid") is None


def test_a_query_finds_what_was_just_archived_on_a_slow_store(stores):
    slow = SlowAppends(stores[IArchiveStore])
    stores[IArchiveStore] = slow
    world = make_world(stores)
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    send_many(world, alice, BOB, 2)
    alice.take()
    world.send(alice, f"<iq type='set' id='q1'><query xmlns='{NS_MAM}'/></iq>")
    assert alice.take() == [], "waits for the pending writes"
    slow.release_all()
    sent = alice.take()
    assert bodies([s for s in sent if s.name == "message"]) == ["m0", "m1"]


class SlowAppends:
    """An archive store whose writes complete only when released, one by one in order."""

    def __init__(self, store):
        self._store = store
        self.waiting = []

    def append_many(self, rows):
        d = defer.Deferred()
        self.waiting.append((d, rows))
        return d

    def release_one(self):
        d, rows = self.waiting.pop(0)
        self._store.append_many(rows).chainDeferred(d)

    def release_all(self):
        while self.waiting:
            self.release_one()

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_writes_queue_while_one_is_in_flight_and_go_together_in_order(stores):
    slow = SlowAppends(stores[IArchiveStore])
    stores[IArchiveStore] = slow
    world = make_world(stores)
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    send_many(world, alice, BOB, 3)
    assert [[(r[0], r[4].count("m0")) for r in rows] for _d, rows in slow.waiting] == [[(ALICE, 1)]], \
        "one write in flight"
    slow.release_one()
    [(_d, rows)] = slow.waiting
    assert [r[0] for r in rows] == [BOB, ALICE, BOB, ALICE, BOB], "the rest in one transaction, in order"
    slow.release_all()
    assert [str(parse_stanza(m.xml).body) for m in archive(stores, ALICE)] == ["m0", "m1", "m2"]
    assert [str(parse_stanza(m.xml).body) for m in archive(stores, BOB)] == ["m0", "m1", "m2"]


def test_a_failed_write_is_logged_and_later_writes_go_on(stores):
    slow = SlowAppends(stores[IArchiveStore])
    stores[IArchiveStore] = slow
    world = make_world(stores)
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    send_many(world, alice, BOB, 2)
    d, _rows = slow.waiting.pop(0)
    d.errback(RuntimeError("disk full"))
    slow.release_all()
    assert [str(parse_stanza(m.xml).body) for m in archive(stores, ALICE)] == ["m1"]
    _reply, results = query(world, alice)
    assert bodies(results) == ["m1"]


def test_the_query_form_lists_the_fields(world):
    alice = online(world, f"{ALICE}/a")
    reply, _ = iq(world, alice, "get", f"<query xmlns='{NS_MAM}'/>")
    [x] = reply.firstChildElement().elements(ns.DATA_FORMS, "x")
    fields = {f["var"]: f.getAttribute("type") for f in x.elements(ns.DATA_FORMS, "field")}
    assert fields == {"FORM_TYPE": "hidden", "with": "jid-single", "start": "text-single", "end": "text-single",
                      "before-id": "text-single", "after-id": "text-single", "ids": "list-multi"}
    assert "<open" in x.toXml()
    assert not [f for f in x.elements(ns.DATA_FORMS, "field") if list(f.elements(ns.DATA_FORMS, "required"))]


def test_metadata(world):
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    reply, _ = iq(world, alice, "get", f"<metadata xmlns='{NS_MAM}'/>")
    assert list(reply.firstChildElement().elements()) == []
    world.clock.advance(1_600_000_000)
    send_many(world, alice, BOB, 3)
    _reply, results = query(world, alice)
    ids = [next(m.elements(NS_MAM, "result"))["id"] for m in results]
    reply, _ = iq(world, alice, "get", f"<metadata xmlns='{NS_MAM}'/>")
    parts = {c.name: c for c in reply.firstChildElement().elements()}
    assert (parts["start"]["id"], parts["end"]["id"]) == (ids[0], ids[-1])
    assert parts["start"]["timestamp"] == "2020-09-13T12:26:40.000Z"


def test_disco_advertises_mam_and_stanza_ids_on_the_account(world):
    alice = online(world, f"{ALICE}/a")
    reply, _ = iq(world, alice, "get", f"<query xmlns='{ns.DISCO_INFO}'/>", to=ALICE)
    features = {f["var"] for f in reply.firstChildElement().elements(ns.DISCO_INFO, "feature")}
    assert {NS_MAM, NS_MAM_EXTENDED, NS_SID} <= features
    reply, _ = iq(world, alice, "get", f"<query xmlns='{ns.DISCO_INFO}'/>", to="example.org")
    assert NS_MAM not in {f["var"] for f in reply.firstChildElement().elements(ns.DISCO_INFO, "feature")}


def test_unloading_withdraws_features_and_hooks(world, stores):
    world.sm.unload_extension("mam")
    alice, bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    chat(world, alice, BOB)
    assert archive(stores, BOB) == [] and not list(bob.take()[0].elements(NS_SID, "stanza-id"))


# -- preferences -------------------------------------------------------------------------

def prefs(world, session, kind="get", body=""):
    reply, _ = iq(world, session, kind, f"<prefs xmlns='{NS_MAM}' {body}")
    return reply


def test_prefs_default_to_the_configured_policy(stores):
    world = make_world(stores, default="roster")
    alice = online(world, f"{ALICE}/a")
    reply = prefs(world, alice, body="/>")
    element = reply.firstChildElement()
    assert element["default"] == "roster"
    assert [c.name for c in element.elements()] == ["always", "never"]


def test_prefs_are_stored_normalised_and_returned(world, stores):
    alice = online(world, f"{ALICE}/a")
    reply = prefs(world, alice, "set", "default='roster'><always><jid>Romeo@Example.org</jid></always>"
                                       "<never><jid>tybalt@example.org/x</jid><jid>tybalt@example.org/x</jid></never></prefs>")
    element = reply.firstChildElement()
    assert element["default"] == "roster"
    assert [str(j) for j in next(element.elements(NS_MAM, "always")).elements(NS_MAM, "jid")] == ["romeo@example.org"]
    assert [str(j) for j in next(element.elements(NS_MAM, "never")).elements(NS_MAM, "jid")] == ["tybalt@example.org/x"]
    stored = stores[IArchiveStore].get_prefs(ALICE).result
    assert (stored.default, stored.always, stored.never) == ("roster", ("romeo@example.org",), ("tybalt@example.org/x",))
    assert prefs(world, alice, body="/>").firstChildElement().toXml() == element.toXml()


@pytest.mark.parametrize("body", ["/>", "default='sometimes'/>", "default='always'><always><jid>@@</jid></always></prefs>",
                                  "default='always'><never><jid></jid></never></prefs>"])
def test_bad_prefs_are_bad_request_and_change_nothing(world, stores, body):
    alice = online(world, f"{ALICE}/a")
    reply = prefs(world, alice, "set", body)
    assert condition(reply) == "bad-request"
    assert stores[IArchiveStore].get_prefs(ALICE).result is None


def test_prefs_lists_are_bounded(world, stores):
    alice = online(world, f"{ALICE}/a")
    jids = "".join(f"<jid>u{n}@example.org</jid>" for n in range(1001))
    reply = prefs(world, alice, "set", f"default='always'><never>{jids}</never></prefs>")
    assert condition(reply) == "not-acceptable"
    assert stores[IArchiveStore].get_prefs(ALICE).result is None


def test_never_list_is_honoured_in_both_directions(world, stores):
    alice, bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    prefs(world, alice, "set", f"default='always'><never><jid>{BOB}</jid></never></prefs>")
    chat(world, alice, f"{BOB}/b", "out")
    chat(world, bob, ALICE, "in")
    assert archive(stores, ALICE) == []
    [delivered] = [m for m in alice.take() if m.name == "message"]
    assert not [s for s in delivered.elements(NS_SID, "stanza-id") if s["by"] == ALICE]
    assert len(archive(stores, BOB)) == 2, "bob's own archive follows bob's preferences"


def test_default_never_with_an_always_list(world, stores):
    alice = online(world, f"{ALICE}/a")
    _bob, _carol = online(world, f"{BOB}/b"), online(world, "carol@example.org/c")
    prefs(world, alice, "set", f"default='never'><always><jid>{BOB}/b</jid></always></prefs>")
    chat(world, alice, f"{BOB}/b", "kept")
    chat(world, alice, f"{BOB}/other", "not kept: another resource")
    chat(world, alice, "carol@example.org", "not kept")
    assert [str(parse_stanza(m.xml).body) for m in archive(stores, ALICE)] == ["kept"]


def test_a_jid_in_both_lists_is_never_archived(world, stores):
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    prefs(world, alice, "set", f"default='always'><always><jid>{BOB}</jid></always><never><jid>{BOB}</jid></never></prefs>")
    chat(world, alice, BOB)
    assert archive(stores, ALICE) == []


def test_default_roster_archives_contacts_only(world, stores):
    alice = online(world, f"{ALICE}/a")
    online(world, f"{BOB}/b"), online(world, "carol@example.org/c")
    stores[IRosterStore].put_item(ALICE, RosterItem(BOB, subscription="both"))
    stores[IRosterStore].put_item(ALICE, RosterItem("carol@example.org", pending_in=True, in_roster=False))
    prefs(world, alice, "set", "default='roster'/>")
    chat(world, alice, BOB, "contact")
    chat(world, alice, "carol@example.org", "stranger")
    chat(world, alice, ALICE, "self")
    assert [str(parse_stanza(m.xml).body) for m in archive(stores, ALICE)] == ["contact", "self"]


def test_configured_default_never_archives_nothing_until_the_user_opts_in(stores):
    world = make_world(stores, default="never")
    alice, bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    chat(world, alice, BOB)
    assert archive(stores, ALICE) == archive(stores, BOB) == []
    assert not list(bob.take()[0].elements(NS_SID, "stanza-id"))
    prefs(world, bob, "set", "default='always'/>")
    chat(world, alice, BOB)
    assert len(archive(stores, BOB)) == 1 and archive(stores, ALICE) == []


# -- retention and removal ---------------------------------------------------------------

def test_max_messages_per_user_drops_the_oldest(stores):
    world = make_world(stores, max_messages_per_user=3)
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    send_many(world, alice, BOB, 5)
    assert [str(parse_stanza(m.xml).body) for m in archive(stores, ALICE)] == ["m2", "m3", "m4"]
    _reply, results = query(world, alice)
    assert bodies(results) == ["m2", "m3", "m4"]


def test_max_age_expires_old_messages(stores):
    world = make_world(stores, max_age_days=1, purge_interval_s=3600)
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    world.clock.advance(1_000_000)
    chat(world, alice, BOB, "old")
    world.clock.advance(86400 - 10)
    chat(world, alice, BOB, "new")
    world.clock.advance(20)
    _reply, results = query(world, alice)
    assert bodies(results) == ["new"], "expired messages are never returned"
    reply, _ = iq(world, alice, "get", f"<metadata xmlns='{NS_MAM}'/>")
    assert next(reply.firstChildElement().elements(NS_MAM, "start"))["id"] == \
        next(results[0].elements(NS_MAM, "result"))["id"]
    world.clock.advance(3600)
    assert [str(parse_stanza(m.xml).body) for m in archive(stores, ALICE)] == ["new"], "and purged"


def test_account_removal_drops_the_archive_and_prefs(world, stores):
    alice, _bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    prefs(world, alice, "set", "default='always'/>")
    chat(world, alice, BOB)
    world.sm.hooks.notify(AccountRemoved, AccountEvent(ALICE))
    assert archive(stores, ALICE) == [] and stores[IArchiveStore].get_prefs(ALICE).result is None
    assert len(archive(stores, BOB)) == 1


# -- helpers and config ------------------------------------------------------------------

def test_parse_stamp_accepts_xep_0082_datetimes_only():
    assert parse_stamp("1970-01-01T00:00:00Z") == 0.0
    assert parse_stamp("1970-01-01T01:00:00.5+01:00") == 0.5
    for bad in ("1970-01-01", "1970-01-01T00:00:00", "soon", ""):
        with pytest.raises(ValueError):
            parse_stamp(bad)


def test_strip_stanza_ids_compares_prepared_jids():
    stanza = parse_stanza(f"<message><stanza-id xmlns='{NS_SID}' by='ALICE@example.org' id='1'/>"
                          f"<stanza-id xmlns='{NS_SID}' by='@@' id='2'/></message>")
    strip_stanza_ids(stanza, ALICE)
    assert [s["id"] for s in stanza.elements(NS_SID, "stanza-id")] == ["2"]


@pytest.mark.parametrize("raw,message", [
    ({"default": "sometimes"}, "default"),
    ({"max_age_days": -1}, "max_age_days"),
    ({"max_messages_per_user": -5}, "max_messages_per_user"),
    ({"max_page_size": 0}, "max_page_size"),
    ({"default_page_size": 300}, "default_page_size"),
    ({"default_page_size": 0}, "default_page_size"),
    ({"purge_interval_s": 0}, "purge_interval_s"),
])
def test_config_is_validated(raw, message):
    with pytest.raises(ConfigError, match=message):
        section_from_dict(MamConfig, raw, ("extensions", "mam"))


def test_config_limits_are_accepted_at_the_edge():
    config = section_from_dict(MamConfig, {"default_page_size": 250, "max_page_size": 250, "max_age_days": 0,
                                           "purge_interval_s": 1}, ("extensions", "mam"))
    assert config.default_page_size == 250


def test_a_redelivered_message_keeps_its_stanza_id_and_is_archived_once(world, stores):
    alice, bob = online(world, f"{ALICE}/a"), online(world, f"{BOB}/b")
    chat(world, alice, BOB)
    [first] = bob.take()
    uid = next(first.elements(NS_SID, "stanza-id"))["id"]
    world.disconnect(bob)
    bob2 = online(world, f"{BOB}/b2")
    world.sm.redeliver(first)                    # unacknowledged when bob/b's session ended (XEP-0198)
    [again] = bob2.take()
    assert [(s["by"], s["id"]) for s in again.elements(NS_SID, "stanza-id")] == [(BOB, uid)]
    assert len(archive(stores, BOB)) == 1


class SlowOffline:
    """An offline store whose appends complete only when released."""

    def __init__(self, store):
        self._store = store
        self.waiting = []

    def append(self, *args):
        d = defer.Deferred()
        self.waiting.append((d, args))
        return d

    def release_all(self):
        while self.waiting:
            d, args = self.waiting.pop(0)
            self._store.append(*args).chainDeferred(d)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_shutdown_waits_for_delivery_behind_a_slow_preference_read(stores):
    """Work started by an asynchronous archiving step (offline storage here) is still
    waited for by a graceful stop, though it began after the stop was asked for."""
    prefs, offline = SlowPrefs(stores[IArchiveStore]), SlowOffline(stores[IOfflineStore])
    stores[IArchiveStore], stores[IOfflineStore] = prefs, offline
    world = make_world(stores)
    alice = online(world, f"{ALICE}/a")
    chat(world, alice, BOB, "for later")
    stopped = world.sm.stopService()
    prefs.release_all()
    assert offline.waiting and not stopped.called
    offline.release_all()
    assert stopped.called
    assert stores[IOfflineStore].count(BOB).result == 1
