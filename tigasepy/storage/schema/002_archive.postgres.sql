-- tigasepy schema version 2 for PostgreSQL: the tables of 002_archive.sql with
-- PostgreSQL types. Keep the two in step: same tables, columns and meanings.
-- JID and id columns use the "C" collation (code point order, as on SQLite).

CREATE TABLE archive (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,   -- archive order, never reused
    owner TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    with_bare TEXT COLLATE "C" NOT NULL,
    with_full TEXT COLLATE "C" NOT NULL,
    stamp DOUBLE PRECISION NOT NULL,
    xml TEXT NOT NULL
);

CREATE UNIQUE INDEX archive_owner_uid ON archive (owner, id);
CREATE INDEX archive_owner_seq ON archive (owner, seq);
CREATE INDEX archive_owner_with ON archive (owner, with_bare, seq);
CREATE INDEX archive_stamp ON archive (stamp);

CREATE TABLE archive_prefs (
    owner TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    default_mode TEXT NOT NULL,
    always_jids TEXT NOT NULL DEFAULT '[]',
    never_jids TEXT NOT NULL DEFAULT '[]'
);
