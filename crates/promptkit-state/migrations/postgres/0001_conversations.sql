-- Conversation state, Postgres dialect. Timestamps are Unix milliseconds (BIGINT) so the
-- SQL stores share one representation; JSON is JSONB.
CREATE TABLE conversations (
    id            TEXT   NOT NULL PRIMARY KEY,
    user_id       TEXT,
    version       BIGINT NOT NULL,
    message_count BIGINT NOT NULL DEFAULT 0,
    metadata      JSONB  NOT NULL DEFAULT '{}'::jsonb,
    summaries     JSONB  NOT NULL DEFAULT '[]'::jsonb,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE INDEX conversations_user_updated ON conversations (user_id, updated_at);
CREATE INDEX conversations_user_created ON conversations (user_id, created_at);

CREATE TABLE messages (
    conversation_id TEXT   NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    position        BIGINT NOT NULL,
    message_id      TEXT,
    body            JSONB  NOT NULL,
    PRIMARY KEY (conversation_id, position)
);

CREATE UNIQUE INDEX messages_conversation_message_id
    ON messages (conversation_id, message_id) WHERE message_id IS NOT NULL;
