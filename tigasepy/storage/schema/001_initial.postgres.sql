-- tigasepy schema version 1 for PostgreSQL: the tables of 001_initial.sql with
-- PostgreSQL types. Keep the two in step: same tables, columns and meanings.
-- JID columns use the "C" collation, so that ORDER BY gives the same (code point)
-- order as SQLite and Python whatever the database's locale, and LIKE can use
-- the indexes.

CREATE TABLE accounts (
    jid TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    created DOUBLE PRECISION NOT NULL
);

CREATE TABLE credentials (
    jid TEXT COLLATE "C" NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    hash_name TEXT NOT NULL,
    salt BYTEA NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BYTEA NOT NULL,
    server_key BYTEA NOT NULL,
    PRIMARY KEY (jid, hash_name)
);

CREATE TABLE roster (
    owner TEXT COLLATE "C" NOT NULL,
    contact TEXT COLLATE "C" NOT NULL,
    name TEXT,
    subscription TEXT NOT NULL DEFAULT 'none',
    ask INTEGER NOT NULL DEFAULT 0,
    pending_in INTEGER NOT NULL DEFAULT 0,
    approved INTEGER NOT NULL DEFAULT 0,
    groups TEXT NOT NULL DEFAULT '[]',
    in_roster INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (owner, contact)
);

CREATE TABLE roster_version (
    owner TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    version INTEGER NOT NULL
);

CREATE TABLE offline (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,   -- ids never reused
    owner TEXT COLLATE "C" NOT NULL,
    stamp DOUBLE PRECISION NOT NULL,
    xml TEXT NOT NULL
);

CREATE INDEX offline_owner_id ON offline (owner, id);
