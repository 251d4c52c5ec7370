-- Conversation state, SQLite dialect. Timestamps are Unix milliseconds; JSON is TEXT.
CREATE TABLE conversations (
    id            TEXT    NOT NULL PRIMARY KEY,
    user_id       TEXT,
    version       INTEGER NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0,
    metadata      TEXT    NOT NULL DEFAULT '{}',
    summaries     TEXT    NOT NULL DEFAULT '[]',
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE INDEX conversations_user_updated ON conversations (user_id, updated_at);
CREATE INDEX conversations_user_created ON conversations (user_id, created_at);

-- One row per message: the message's JSON form, its 0-based position and its id (the
-- partial unique index makes appends idempotent).
CREATE TABLE messages (
    conversation_id TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    position        INTEGER NOT NULL,
    message_id      TEXT,
    body            TEXT    NOT NULL,
    PRIMARY KEY (conversation_id, position)
) WITHOUT ROWID;

CREATE UNIQUE INDEX messages_conversation_message_id
    ON messages (conversation_id, message_id) WHERE message_id IS NOT NULL;
