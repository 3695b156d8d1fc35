"""Privacy lists in SQL (tables ``privacy_list``, ``privacy_item``, ``privacy_default``; XEP-0016).

The blocking command (XEP-0191) keeps its blocklist in the default list, so it uses
this store too. Deletions are explicit rather than left to the foreign keys, so the
store behaves the same whether or not the engine enforces them.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from tigasepy.storage.database import Database
from tigasepy.storage.engines import DatabaseEngine
from tigasepy.storage.interfaces import IPrivacyStore, PrivacyItem, PrivacySettings

_KIND_COLUMNS = (("message", "message"), ("iq", "iq"), ("presence-in", "presence_in"),
                 ("presence-out", "presence_out"))
_ITEM_COLUMNS = ("owner", "name", "item_order", "action", "type", "value") + tuple(c for _k, c in _KIND_COLUMNS)


def _item(row: tuple[Any, ...]) -> PrivacyItem:
    order, action, type_, value, *flags = row
    kinds = frozenset(kind for (kind, _column), flag in zip(_KIND_COLUMNS, flags) if flag)
    return PrivacyItem(order=int(order), action=action, type=type_, value=value, kinds=kinds)


def get_all_txn(cursor: Any, engine: DatabaseEngine, owner: str) -> PrivacySettings:
    """Every list of ``owner`` with its items (ordered by ``order``) and the default list's name."""
    cursor.execute(engine.sql("SELECT name FROM privacy_list WHERE owner = ?"), (owner,))
    lists: dict[str, list[PrivacyItem]] = {name: [] for (name,) in cursor.fetchall()}
    cursor.execute(engine.sql(
        "SELECT name, item_order, action, type, value, message, iq, presence_in, presence_out"
        " FROM privacy_item WHERE owner = ? ORDER BY name, item_order"), (owner,))
    for name, *rest in cursor.fetchall():
        lists.setdefault(name, []).append(_item(tuple(rest)))
    cursor.execute(engine.sql("SELECT name FROM privacy_default WHERE owner = ?"), (owner,))
    row = cursor.fetchone()
    return PrivacySettings(lists={name: tuple(items) for name, items in sorted(lists.items())},
                           default=row[0] if row is not None else None)


def put_list_txn(cursor: Any, engine: DatabaseEngine, owner: str, name: str,
                 items: tuple[PrivacyItem, ...], make_default: bool = False) -> None:
    """Create or replace list ``name`` of ``owner``; optionally make it the default."""
    cursor.execute(engine.upsert("privacy_list", ("owner", "name"), ("owner", "name")), (owner, name))
    cursor.execute(engine.sql("DELETE FROM privacy_item WHERE owner = ? AND name = ?"), (owner, name))
    insert = engine.sql(f"INSERT INTO privacy_item ({', '.join(_ITEM_COLUMNS)})"
                        f" VALUES ({engine.placeholders(len(_ITEM_COLUMNS))})")
    for item in items:
        cursor.execute(insert, (owner, name, int(item.order), item.action, item.type, item.value)
                       + tuple(int(kind in item.kinds) for kind, _column in _KIND_COLUMNS))
    if make_default:
        set_default_txn(cursor, engine, owner, name)


def remove_list_txn(cursor: Any, engine: DatabaseEngine, owner: str, name: str) -> bool:
    """Delete list ``name`` of ``owner`` (and the default mark on it); True if it existed."""
    cursor.execute(engine.sql("DELETE FROM privacy_default WHERE owner = ? AND name = ?"), (owner, name))
    cursor.execute(engine.sql("DELETE FROM privacy_item WHERE owner = ? AND name = ?"), (owner, name))
    cursor.execute(engine.sql("DELETE FROM privacy_list WHERE owner = ? AND name = ?"), (owner, name))
    return bool(cursor.rowcount and cursor.rowcount > 0)


def set_default_txn(cursor: Any, engine: DatabaseEngine, owner: str, name: str | None) -> None:
    """Make list ``name`` the default of ``owner`` (None: none); ``KeyError`` if there is no such list."""
    if name is None:
        cursor.execute(engine.sql("DELETE FROM privacy_default WHERE owner = ?"), (owner,))
        return
    cursor.execute(engine.sql("SELECT 1 FROM privacy_list WHERE owner = ? AND name = ?"), (owner, name))
    if cursor.fetchone() is None:
        raise KeyError(name)
    cursor.execute(engine.upsert("privacy_default", ("owner",), ("owner", "name")), (owner, name))


def remove_owner_txn(cursor: Any, engine: DatabaseEngine, owner: str) -> None:
    """Delete every privacy list of ``owner``."""
    for table in ("privacy_default", "privacy_item", "privacy_list"):
        cursor.execute(engine.sql(f"DELETE FROM {table} WHERE owner = ?"), (owner,))


@implementer(IPrivacyStore)
class SqlPrivacyStore:
    """``IPrivacyStore`` in an SQL database."""

    def __init__(self, database: Database) -> None:
        """
        Args:
            database: where the tables live.
        """
        self._db = database

    def get_all(self, owner: str) -> "defer.Deferred[PrivacySettings]":
        """See ``IPrivacyStore.get_all``."""
        return self._db.run_interaction("get_privacy", get_all_txn, self._db.engine, owner)

    def put_list(self, owner: str, name: str, items: tuple[PrivacyItem, ...],
                 make_default: bool = False) -> "defer.Deferred[None]":
        """See ``IPrivacyStore.put_list``."""
        return self._db.run_interaction("put_privacy_list", put_list_txn, self._db.engine, owner, name,
                                        tuple(items), make_default)

    def remove_list(self, owner: str, name: str) -> "defer.Deferred[bool]":
        """See ``IPrivacyStore.remove_list``."""
        return self._db.run_interaction("remove_privacy_list", remove_list_txn, self._db.engine, owner, name)

    def set_default(self, owner: str, name: str | None) -> "defer.Deferred[None]":
        """See ``IPrivacyStore.set_default``."""
        return self._db.run_interaction("set_privacy_default", set_default_txn, self._db.engine, owner, name)

    def remove_owner(self, owner: str) -> "defer.Deferred[None]":
        """See ``IPrivacyStore.remove_owner``."""
        return self._db.run_interaction("remove_privacy", remove_owner_txn, self._db.engine, owner)
