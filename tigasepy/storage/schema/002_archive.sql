-- tigasepy schema version 2: message archives (XEP-0313) and archiving preferences
-- (XEP-0441). Portable SQL where possible; SQLite-specific parts are marked. A
-- PostgreSQL engine provides 002_archive.postgres.sql instead.

CREATE TABLE archive (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- SQLite; archive order, never reused
    owner TEXT NOT NULL,                    -- bare JID of the archive's user
    id TEXT NOT NULL,                       -- archive UID, also the XEP-0359 stanza-id
    with_bare TEXT NOT NULL,                -- bare JID of the other party
    with_full TEXT NOT NULL,                -- the other party as addressed (full or bare)
    stamp DOUBLE PRECISION NOT NULL,        -- seconds since the epoch, sent or received
    xml TEXT NOT NULL                       -- the serialized stanza
);

CREATE UNIQUE INDEX archive_owner_uid ON archive (owner, id);
CREATE INDEX archive_owner_seq ON archive (owner, seq);
CREATE INDEX archive_owner_with ON archive (owner, with_bare, seq);
CREATE INDEX archive_stamp ON archive (stamp);

CREATE TABLE archive_prefs (
    owner TEXT NOT NULL PRIMARY KEY,
    default_mode TEXT NOT NULL,             -- 'always', 'never' or 'roster'
    always_jids TEXT NOT NULL DEFAULT '[]', -- JSON list of JIDs
    never_jids TEXT NOT NULL DEFAULT '[]'   -- JSON list of JIDs
);
