-- 0010_group_restore.sql — what a partition rebuild needs to bring hold groups back
-- (sync/group_restore.py).
--
-- holds.group_id: the hold group a hold is a member of (the hold's g; NULL for a
-- single hold), so a rebuilt member still changes only with its group.
-- group_events.created_at: when the group was made (the group JSON's c), so a
-- rebuilt group record says it; NULL on events recorded before this migration.
-- group_events.idempotency_key: the key that made the group (the JSON's k), so a
-- rebuild binds it again while the idempotency memory lasts.

ALTER TABLE holds ADD COLUMN group_id text;
CREATE INDEX holds_group ON holds (group_id) WHERE group_id IS NOT NULL;
ALTER TABLE group_events ADD COLUMN created_at timestamptz;
ALTER TABLE group_events ADD COLUMN idempotency_key text;
CREATE INDEX group_events_stream ON group_events (stream, group_id, version);
