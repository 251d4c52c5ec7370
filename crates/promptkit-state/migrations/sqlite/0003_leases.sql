-- Turn leases (`StateStore::try_lease`): at most one token holds a conversation's lease until
-- `expires_at` (Unix milliseconds). A row is independent of the conversation: a lease can be
-- taken before the conversation exists and outlives its deletion until it expires.
CREATE TABLE leases (
    id         TEXT    NOT NULL PRIMARY KEY,
    token      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX leases_expires ON leases (expires_at);
