"""Personal eventing (XEP-0163) nodes and items in SQL (tables ``pep_nodes``, ``pep_items``)."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from tigasepy.storage.database import Database
from tigasepy.storage.engines import DatabaseEngine
from tigasepy.storage.interfaces import IPepStore, PepItem


def get_node_txn(cursor: Any, engine: DatabaseEngine, owner: str, node: str) -> dict[str, str] | None:
    """The configuration of ``owner``'s ``node``, or None."""
    cursor.execute(engine.sql("SELECT config FROM pep_nodes WHERE owner = ? AND node = ?"), (owner, node))
    row = cursor.fetchone()
    return json.loads(row[0]) if row is not None else None


def nodes_txn(cursor: Any, engine: DatabaseEngine, owner: str) -> list[str]:
    """The node names of ``owner`` in code point order."""
    cursor.execute(engine.sql("SELECT node FROM pep_nodes WHERE owner = ?"), (owner,))
    return sorted(node for (node,) in cursor.fetchall())


def put_node_txn(cursor: Any, engine: DatabaseEngine, owner: str, node: str, config: dict[str, str]) -> None:
    """Create the node or replace its configuration."""
    statement = engine.upsert("pep_nodes", ("owner", "node"), ("owner", "node", "config"))
    cursor.execute(statement, (owner, node, json.dumps(config, sort_keys=True)))


def delete_node_txn(cursor: Any, engine: DatabaseEngine, owner: str, node: str) -> bool:
    """Delete the node and its items; True when the node existed."""
    cursor.execute(engine.sql("DELETE FROM pep_items WHERE owner = ? AND node = ?"), (owner, node))
    cursor.execute(engine.sql("DELETE FROM pep_nodes WHERE owner = ? AND node = ?"), (owner, node))
    return cursor.rowcount > 0


def items_txn(cursor: Any, engine: DatabaseEngine, owner: str, node: str, limit: int | None) -> list[PepItem]:
    """The node's items, newest first, at most ``limit``."""
    text = "SELECT item_id, xml FROM pep_items WHERE owner = ? AND node = ? ORDER BY seq DESC"
    params: tuple[Any, ...] = (owner, node)
    if limit is not None:
        text += " LIMIT ?"
        params += (limit,)
    cursor.execute(engine.sql(text), params)
    return [PepItem(item_id, xml) for item_id, xml in cursor.fetchall()]


def get_items_txn(cursor: Any, engine: DatabaseEngine, owner: str, node: str, item_ids: list[str]) -> list[PepItem]:
    """The items of ``item_ids`` that exist, in the order asked."""
    found = {}
    for item_id in dict.fromkeys(item_ids):
        cursor.execute(engine.sql("SELECT xml FROM pep_items WHERE owner = ? AND node = ? AND item_id = ?"),
                       (owner, node, item_id))
        row = cursor.fetchone()
        if row is not None:
            found[item_id] = PepItem(item_id, row[0])
    return list(found.values())


def publish_txn(cursor: Any, engine: DatabaseEngine, owner: str, node: str, item: PepItem,
                max_items: int | None) -> list[str]:
    """Store ``item`` as the newest, trim to ``max_items``; the ids trimmed away."""
    cursor.execute(engine.sql("SELECT COALESCE(MAX(seq), 0) FROM pep_items WHERE owner = ? AND node = ?"),
                   (owner, node))
    seq = int(cursor.fetchone()[0]) + 1
    statement = engine.upsert("pep_items", ("owner", "node", "item_id"), ("owner", "node", "item_id", "seq", "xml"))
    cursor.execute(statement, (owner, node, item.item_id, seq, item.xml))
    if max_items is None:
        return []
    cursor.execute(engine.sql("SELECT item_id FROM pep_items WHERE owner = ? AND node = ? ORDER BY seq DESC"),
                   (owner, node))
    dropped = [item_id for (item_id,) in cursor.fetchall()[max_items:]]
    for item_id in dropped:
        cursor.execute(engine.sql("DELETE FROM pep_items WHERE owner = ? AND node = ? AND item_id = ?"),
                       (owner, node, item_id))
    return dropped


def retract_txn(cursor: Any, engine: DatabaseEngine, owner: str, node: str, item_id: str) -> bool:
    """Delete one item; True when it existed."""
    cursor.execute(engine.sql("DELETE FROM pep_items WHERE owner = ? AND node = ? AND item_id = ?"),
                   (owner, node, item_id))
    return cursor.rowcount > 0


def purge_txn(cursor: Any, engine: DatabaseEngine, owner: str, node: str) -> None:
    """Delete every item of the node."""
    cursor.execute(engine.sql("DELETE FROM pep_items WHERE owner = ? AND node = ?"), (owner, node))


def remove_owner_txn(cursor: Any, engine: DatabaseEngine, owner: str) -> None:
    """Delete every node and item of ``owner``."""
    cursor.execute(engine.sql("DELETE FROM pep_items WHERE owner = ?"), (owner,))
    cursor.execute(engine.sql("DELETE FROM pep_nodes WHERE owner = ?"), (owner,))


@implementer(IPepStore)
class SqlPepStore:
    """``IPepStore`` in an SQL database."""

    def __init__(self, database: Database) -> None:
        """
        Args:
            database: where the tables live.
        """
        self._db = database

    def _run(self, name: str, fn: Any, *args: Any) -> "defer.Deferred[Any]":
        return self._db.run_interaction(name, fn, self._db.engine, *args)

    def get_node(self, owner: str, node: str) -> "defer.Deferred[dict[str, str] | None]":
        """See ``IPepStore.get_node``."""
        return self._run("pep_get_node", get_node_txn, owner, node)

    def nodes(self, owner: str) -> "defer.Deferred[list[str]]":
        """See ``IPepStore.nodes``."""
        return self._run("pep_nodes", nodes_txn, owner)

    def put_node(self, owner: str, node: str, config: dict[str, str]) -> "defer.Deferred[None]":
        """See ``IPepStore.put_node``."""
        return self._run("pep_put_node", put_node_txn, owner, node, dict(config))

    def delete_node(self, owner: str, node: str) -> "defer.Deferred[bool]":
        """See ``IPepStore.delete_node``."""
        return self._run("pep_delete_node", delete_node_txn, owner, node)

    def items(self, owner: str, node: str, limit: int | None = None) -> "defer.Deferred[list[PepItem]]":
        """See ``IPepStore.items``."""
        return self._run("pep_items", items_txn, owner, node, limit)

    def get_items(self, owner: str, node: str, item_ids: list[str]) -> "defer.Deferred[list[PepItem]]":
        """See ``IPepStore.get_items``."""
        return self._run("pep_get_items", get_items_txn, owner, node, list(item_ids))

    def publish(self, owner: str, node: str, item: PepItem, max_items: int | None) -> "defer.Deferred[list[str]]":
        """See ``IPepStore.publish``."""
        return self._run("pep_publish", publish_txn, owner, node, item, max_items)

    def retract(self, owner: str, node: str, item_id: str) -> "defer.Deferred[bool]":
        """See ``IPepStore.retract``."""
        return self._run("pep_retract", retract_txn, owner, node, item_id)

    def purge(self, owner: str, node: str) -> "defer.Deferred[None]":
        """See ``IPepStore.purge``."""
        return self._run("pep_purge", purge_txn, owner, node)

    def remove_owner(self, owner: str) -> "defer.Deferred[None]":
        """See ``IPepStore.remove_owner``."""
        return self._run("pep_remove_owner", remove_owner_txn, owner)
