-- JSON is kept as text, exactly as serialised, instead of JSONB: JSONB refuses the escape
-- `\u0000`, so a message, tool result, metadata value or summary holding U+0000 could not be
-- stored. JSON text holds it as the six characters `\u0000`, which text columns accept.
-- Nothing queries inside these values; merging metadata and adding a summary read, change
-- and write them under the conversation's row lock.
ALTER TABLE messages ALTER COLUMN body TYPE TEXT USING body::text;

ALTER TABLE conversations ALTER COLUMN metadata DROP DEFAULT;
ALTER TABLE conversations ALTER COLUMN metadata TYPE TEXT USING metadata::text;
ALTER TABLE conversations ALTER COLUMN metadata SET DEFAULT '{}';

ALTER TABLE conversations ALTER COLUMN summaries DROP DEFAULT;
ALTER TABLE conversations ALTER COLUMN summaries TYPE TEXT USING summaries::text;
ALTER TABLE conversations ALTER COLUMN summaries SET DEFAULT '[]';
