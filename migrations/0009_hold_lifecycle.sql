-- 0009_hold_lifecycle.sql — extensions and partial confirms (issue 13).
--
-- holds.extensions: how often the hold was extended (the cap survives a rebuild
-- from PostgreSQL). hold_events keeps what the status alone does not say: an
-- extension (extended, the event's occurred_at is when it happened) and the
-- units a partial confirm gave back to the slot (released; the event's quantity
-- is what was confirmed).

ALTER TABLE holds ADD COLUMN extensions smallint NOT NULL DEFAULT 0 CHECK (extensions >= 0);
ALTER TABLE hold_events ADD COLUMN extended boolean NOT NULL DEFAULT false;
ALTER TABLE hold_events ADD COLUMN released integer NOT NULL DEFAULT 0 CHECK (released >= 0);
