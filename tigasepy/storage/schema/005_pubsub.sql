-- tigasepy schema version 5: personal eventing (XEP-0163 PEP on a XEP-0060 subset).
-- Portable SQL (SQLite and PostgreSQL). One row per node of an account with its
-- configuration (JSON text), one row per stored item with its publication order.
-- Keyed by the owner's prepared bare JID; account removal deletes the owner's rows.

CREATE TABLE pep_nodes (
    owner TEXT NOT NULL,
    node TEXT NOT NULL,
    config TEXT NOT NULL,                   -- JSON object: pubsub#* option -> value
    PRIMARY KEY (owner, node)
);

CREATE TABLE pep_items (
    owner TEXT NOT NULL,
    node TEXT NOT NULL,
    item_id TEXT NOT NULL,
    seq BIGINT NOT NULL,                    -- publication order within the node, higher is newer
    xml TEXT NOT NULL,                      -- the serialized payload element
    PRIMARY KEY (owner, node, item_id)
);

CREATE INDEX pep_items_order ON pep_items (owner, node, seq);
