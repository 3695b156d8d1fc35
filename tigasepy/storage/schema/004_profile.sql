-- tigasepy schema version 4: per-account profile data. Portable SQL (SQLite and
-- PostgreSQL): vcard-temp (XEP-0054) with its photo hash (XEP-0153), private
-- XML storage (XEP-0049) and the last logout (XEP-0012). Every table is keyed by
-- the owner's prepared bare JID; account removal deletes the owner's rows.

CREATE TABLE vcard (
    owner TEXT NOT NULL PRIMARY KEY,
    xml TEXT NOT NULL,                      -- the serialized <vCard xmlns='vcard-temp'/>
    photo_hash TEXT                         -- hex SHA-1 of the PHOTO's BINVAL, NULL without one
);

CREATE TABLE private_storage (
    owner TEXT NOT NULL,
    namespace TEXT NOT NULL,                -- the namespace of the stored elements
    xml TEXT NOT NULL,                      -- the serialized elements of that namespace
    PRIMARY KEY (owner, namespace)
);

CREATE TABLE last_activity (
    owner TEXT NOT NULL PRIMARY KEY,
    stamp DOUBLE PRECISION NOT NULL,        -- seconds since the epoch of the last logout
    status TEXT NOT NULL DEFAULT ''         -- the <status/> of the last unavailable presence
);
