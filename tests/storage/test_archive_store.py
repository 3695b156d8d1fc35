"""Contract tests for IArchiveStore (XEP-0313 archives, XEP-0441 preferences), on every backend."""

from __future__ import annotations

import pytest
import pytest_twisted
from zope.interface.verify import verifyObject

from tigasepy.storage.interfaces import ArchivedMessage, ArchivePrefs, ArchiveQuery, IArchiveStore

OWNER = "alice@example.org"
ALL = ArchiveQuery()


async def fill(store, owner=OWNER, count=5, with_jid="bob@example.org/phone", stamp=1000.0):
    """Append ``count`` messages ``m0``.. to ``owner``'s archive; returns their seqs."""
    return [await store.append(owner, f"{owner}-m{n}", with_jid, stamp + n, f"<message id='{n}'/>")
            for n in range(count)]


def test_store_provides_interface(stores):
    """The archive store implements IArchiveStore."""
    assert verifyObject(IArchiveStore, stores.get(IArchiveStore))


@pytest_twisted.ensureDeferred
async def test_messages_come_back_in_archive_order_with_everything_stored(stores):
    store = stores.get(IArchiveStore)
    seqs = await fill(store)
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    found = await store.query(OWNER, ALL, 10)
    assert found == [ArchivedMessage(id=f"{OWNER}-m{n}", seq=s, with_jid="bob@example.org/phone",
                                     stamp=1000.0 + n, xml=f"<message id='{n}'/>") for n, s in enumerate(seqs)]


@pytest_twisted.ensureDeferred
async def test_append_many_stores_rows_in_order_in_one_go(stores):
    store = stores.get(IArchiveStore)
    first = await store.append(OWNER, "before", "bob@example.org", 1.0, "<m n='0'/>")
    rows = [(OWNER, "a", "bob@example.org/x", 2.0, "<m n='1'/>"), ("bob@example.org", "a", OWNER, 2.0, "<m/>"),
            (OWNER, "b", "carol@example.org", 3.0, "<m n='2'/>")]
    assert await store.append_many(rows) == 3
    assert await store.append_many([]) == 0
    found = await store.query(OWNER, ALL, 10)
    assert [(m.id, m.with_jid, m.stamp, m.xml) for m in found] == [
        ("before", "bob@example.org", 1.0, "<m n='0'/>"), ("a", "bob@example.org/x", 2.0, "<m n='1'/>"),
        ("b", "carol@example.org", 3.0, "<m n='2'/>")]
    assert found[0].seq == first and found[0].seq < found[1].seq < found[2].seq
    assert [m.id for m in await store.query(OWNER, ArchiveQuery(with_jid="bob@example.org"), 10)] == ["before", "a"]
    assert await store.count("bob@example.org", ALL) == 1


@pytest_twisted.ensureDeferred
async def test_append_many_with_a_known_id_stores_nothing(stores):
    store = stores.get(IArchiveStore)
    await store.append(OWNER, "taken", "bob@example.org", 1.0, "<m/>")
    with pytest.raises(Exception):
        await store.append_many([(OWNER, "new", "bob@example.org", 2.0, "<m/>"),
                                 (OWNER, "taken", "bob@example.org", 3.0, "<m/>")])
    assert [m.id for m in await store.query(OWNER, ALL, 10)] == ["taken"]


@pytest_twisted.ensureDeferred
async def test_limit_offset_and_newest_first(stores):
    store = stores.get(IArchiveStore)
    await fill(store, count=6)
    ids = lambda ms: [m.id[-2:] for m in ms]  # noqa: E731
    assert ids(await store.query(OWNER, ALL, 2)) == ["m0", "m1"]
    assert ids(await store.query(OWNER, ALL, 2, offset=3)) == ["m3", "m4"]
    assert ids(await store.query(OWNER, ALL, 2, newest_first=True)) == ["m5", "m4"]
    assert ids(await store.query(OWNER, ALL, 2, newest_first=True, offset=1)) == ["m4", "m3"]
    assert await store.query(OWNER, ALL, 0) == []


@pytest_twisted.ensureDeferred
async def test_archives_are_per_owner(stores):
    store = stores.get(IArchiveStore)
    await fill(store, count=2)
    await fill(store, owner="bob@example.org", count=3)
    assert await store.count(OWNER, ALL) == 2
    assert await store.count("bob@example.org", ALL) == 3
    assert [m.id for m in await store.query("carol@example.org", ALL, 10)] == []


@pytest_twisted.ensureDeferred
async def test_same_id_in_two_archives_is_allowed(stores):
    store = stores.get(IArchiveStore)
    await store.append(OWNER, "shared", "bob@example.org", 1.0, "<m/>")
    await store.append("bob@example.org", "shared", OWNER, 1.0, "<m/>")
    assert await store.positions(OWNER, ["shared"]) != {}


@pytest_twisted.ensureDeferred
async def test_with_bare_matches_every_resource_and_full_matches_exactly(stores):
    store = stores.get(IArchiveStore)
    await store.append(OWNER, "a", "bob@example.org/phone", 1.0, "<m/>")
    await store.append(OWNER, "b", "bob@example.org", 2.0, "<m/>")
    await store.append(OWNER, "c", "carol@example.org/x", 3.0, "<m/>")
    await store.append(OWNER, "d", "bob@example.org/laptop", 4.0, "<m/>")
    await store.append(OWNER, "e", OWNER, 5.0, "<m/>")

    async def ids(with_jid):
        return [m.id for m in await store.query(OWNER, ArchiveQuery(with_jid=with_jid), 10)]

    assert await ids("bob@example.org") == ["a", "b", "d"]
    assert await ids("bob@example.org/phone") == ["a"]
    assert await ids("carol@example.org") == ["c"]
    assert await ids(OWNER) == ["e"]
    assert await ids("dave@example.org") == []
    assert await store.count(OWNER, ArchiveQuery(with_jid="bob@example.org")) == 3


@pytest_twisted.ensureDeferred
async def test_time_range_is_inclusive(stores):
    store = stores.get(IArchiveStore)
    await fill(store, count=5)                          # stamps 1000..1004
    found = await store.query(OWNER, ArchiveQuery(start=1001.0, end=1003.0), 10)
    assert [m.stamp for m in found] == [1001.0, 1002.0, 1003.0]
    assert await store.count(OWNER, ArchiveQuery(start=1003.5)) == 1
    assert await store.count(OWNER, ArchiveQuery(end=999.0)) == 0


@pytest_twisted.ensureDeferred
async def test_positions_are_exclusive_bounds_and_ids_select(stores):
    store = stores.get(IArchiveStore)
    seqs = await fill(store, count=5)
    found = await store.query(OWNER, ArchiveQuery(after_seq=seqs[0], before_seq=seqs[3]), 10)
    assert [m.seq for m in found] == seqs[1:3]
    selected = await store.query(OWNER, ArchiveQuery(ids=(f"{OWNER}-m4", f"{OWNER}-m1", "nope")), 10)
    assert [m.seq for m in selected] == [seqs[1], seqs[4]]
    assert await store.count(OWNER, ArchiveQuery(ids=())) == 0


@pytest_twisted.ensureDeferred
async def test_positions_finds_only_the_owners_ids(stores):
    store = stores.get(IArchiveStore)
    seqs = await fill(store, count=3)
    await fill(store, owner="bob@example.org", count=1)
    assert await store.positions(OWNER, [f"{OWNER}-m2", f"{OWNER}-m0", "bob@example.org-m0", "x"]) == {
        f"{OWNER}-m2": seqs[2], f"{OWNER}-m0": seqs[0]}
    assert await store.positions(OWNER, []) == {}


@pytest_twisted.ensureDeferred
async def test_positions_of_many_ids_work_past_parameter_limits(stores):
    store = stores.get(IArchiveStore)
    seqs = await fill(store, count=3)
    asked = [f"nope-{n}" for n in range(1200)] + [f"{OWNER}-m1"]
    assert await store.positions(OWNER, asked) == {f"{OWNER}-m1": seqs[1]}


@pytest_twisted.ensureDeferred
async def test_bounds_are_the_oldest_and_newest(stores):
    store = stores.get(IArchiveStore)
    assert await store.bounds(OWNER) is None
    await fill(store, count=3)
    first, last = await store.bounds(OWNER)
    assert (first.id, last.id) == (f"{OWNER}-m0", f"{OWNER}-m2")


@pytest_twisted.ensureDeferred
async def test_trim_keeps_the_newest(stores):
    store = stores.get(IArchiveStore)
    seqs = await fill(store, count=5)
    await fill(store, owner="bob@example.org", count=2)
    assert await store.trim(OWNER, 2) == 3
    assert [m.seq for m in await store.query(OWNER, ALL, 10)] == seqs[3:]
    assert await store.trim(OWNER, 2) == 0
    assert await store.trim(OWNER, 10) == 0
    assert await store.count("bob@example.org", ALL) == 2
    assert await store.positions(OWNER, [f"{OWNER}-m0"]) == {}
    assert await store.trim(OWNER, 0) == 2
    assert await store.count(OWNER, ALL) == 0


@pytest_twisted.ensureDeferred
async def test_positions_are_never_reused_after_deletion(stores):
    store = stores.get(IArchiveStore)
    seqs = await fill(store, count=3)
    await store.trim(OWNER, 0)
    new = await store.append(OWNER, "fresh", "bob@example.org", 5000.0, "<m/>")
    assert new > max(seqs)


@pytest_twisted.ensureDeferred
async def test_expire_removes_old_messages_of_every_owner(stores):
    store = stores.get(IArchiveStore)
    await fill(store, count=4, stamp=100.0)             # 100..103
    await fill(store, owner="bob@example.org", count=2, stamp=101.0)   # 101, 102
    assert await store.expire(102.0) == 3
    assert [m.stamp for m in await store.query(OWNER, ALL, 10)] == [102.0, 103.0]
    assert [m.stamp for m in await store.query("bob@example.org", ALL, 10)] == [102.0]


@pytest_twisted.ensureDeferred
async def test_prefs_round_trip_and_replace(stores):
    store = stores.get(IArchiveStore)
    assert await store.get_prefs(OWNER) is None
    prefs = ArchivePrefs(default="roster", always=("romeo@example.org",),
                         never=("tybalt@example.org", "nurse@example.org/x"))
    await store.set_prefs(OWNER, prefs)
    assert await store.get_prefs(OWNER) == prefs
    await store.set_prefs(OWNER, ArchivePrefs(default="never"))
    assert await store.get_prefs(OWNER) == ArchivePrefs(default="never")
    assert await store.get_prefs("bob@example.org") is None


@pytest_twisted.ensureDeferred
async def test_remove_owner_drops_archive_and_prefs_of_that_owner_only(stores):
    store = stores.get(IArchiveStore)
    await fill(store, count=3)
    await fill(store, owner="bob@example.org", count=1)
    await store.set_prefs(OWNER, ArchivePrefs(default="never"))
    assert await store.remove_owner(OWNER) == 3
    assert await store.count(OWNER, ALL) == 0
    assert await store.get_prefs(OWNER) is None
    assert await store.count("bob@example.org", ALL) == 1


@pytest_twisted.ensureDeferred
async def test_xml_and_jids_survive_unicode(stores):
    store = stores.get(IArchiveStore)
    xml = "<message><body>Grüße, 世界 &amp; ' \"</body></message>"
    await store.append(OWNER, "u", "jürgen@example.org/Büro", 1.5, xml)
    [message] = await store.query(OWNER, ArchiveQuery(with_jid="jürgen@example.org"), 10)
    assert (message.xml, message.with_jid) == (xml, "jürgen@example.org/Büro")
