-- tigasepy schema version 6: persistent Multi-User Chat rooms (XEP-0045).
-- Portable SQL (SQLite and PostgreSQL). One row per persistent room of a MUC service:
-- its configuration and affiliations as JSON text. Room archives live in the message
-- archive (002) with the room's bare JID as the owner.

CREATE TABLE muc_rooms (
    service TEXT NOT NULL,                  -- the component's domain
    jid TEXT NOT NULL,                      -- the room's bare JID
    data TEXT NOT NULL,                     -- JSON: {"config": {...}, "affiliations": {jid: affiliation}}
    PRIMARY KEY (service, jid)
);
