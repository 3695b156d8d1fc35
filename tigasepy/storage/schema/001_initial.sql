-- tigasepy schema version 1: accounts, SCRAM credentials, rosters, offline messages.
-- Portable SQL where possible; SQLite-specific parts are marked. A PostgreSQL
-- engine provides 001_initial.postgres.sql instead.

CREATE TABLE accounts (
    jid TEXT NOT NULL PRIMARY KEY,          -- prepared bare JID
    created DOUBLE PRECISION NOT NULL       -- seconds since the epoch
);

CREATE TABLE credentials (
    jid TEXT NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    hash_name TEXT NOT NULL,                -- 'SHA-1' or 'SHA-256'
    salt BLOB NOT NULL,                     -- BYTEA on PostgreSQL
    iterations INTEGER NOT NULL,
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    PRIMARY KEY (jid, hash_name)
);

CREATE TABLE roster (
    owner TEXT NOT NULL,                    -- bare JID of the roster's user
    contact TEXT NOT NULL,                  -- bare JID of the contact
    name TEXT,
    subscription TEXT NOT NULL DEFAULT 'none',
    ask INTEGER NOT NULL DEFAULT 0,         -- booleans are 0/1
    pending_in INTEGER NOT NULL DEFAULT 0,
    approved INTEGER NOT NULL DEFAULT 0,
    groups TEXT NOT NULL DEFAULT '[]',      -- JSON list of group names
    in_roster INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (owner, contact)
);

CREATE TABLE roster_version (
    owner TEXT NOT NULL PRIMARY KEY,
    version INTEGER NOT NULL
);

CREATE TABLE offline (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- SQLite; ids never reused
    owner TEXT NOT NULL,
    stamp DOUBLE PRECISION NOT NULL,
    xml TEXT NOT NULL
);

CREATE INDEX offline_owner_id ON offline (owner, id);
