-- Sliding time-to-live: when set (Unix milliseconds), the conversation is treated as missing
-- from that instant on and deleted when next touched or swept. NULL never expires.
ALTER TABLE conversations ADD COLUMN expires_at INTEGER;

CREATE INDEX conversations_expires ON conversations (expires_at) WHERE expires_at IS NOT NULL;
