-- tigasepy schema version 3: privacy lists (XEP-0016). The blocking command (XEP-0191)
-- keeps its blocklist in the default list, so both protocols share these tables.
-- Portable SQL: the same DDL serves SQLite and PostgreSQL.

CREATE TABLE privacy_list (
    owner TEXT NOT NULL,                    -- bare JID of the list's user
    name TEXT NOT NULL,
    PRIMARY KEY (owner, name)
);

CREATE TABLE privacy_item (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    item_order BIGINT NOT NULL,             -- the item's 'order' (0 .. 2^32-1), unique in its list
    action TEXT NOT NULL,                   -- 'allow' or 'deny'
    type TEXT,                              -- 'jid', 'group', 'subscription'; NULL: fall-through
    value TEXT,
    message INTEGER NOT NULL DEFAULT 0,     -- the stanza kinds named (booleans 0/1),
    iq INTEGER NOT NULL DEFAULT 0,          -- none named: every stanza
    presence_in INTEGER NOT NULL DEFAULT 0,
    presence_out INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (owner, name, item_order),
    FOREIGN KEY (owner, name) REFERENCES privacy_list (owner, name) ON DELETE CASCADE
);

CREATE TABLE privacy_default (
    owner TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    FOREIGN KEY (owner, name) REFERENCES privacy_list (owner, name) ON DELETE CASCADE
);
