-- 0011_slot_archive.sql — slots leave Redis when they are over (sync/archive.py).
--
-- slots.archived_at: when the archive sweep took the slot and its holds out of
-- Redis; from then on PostgreSQL answers for them, and a partition rebuild,
-- reconcile and the availability list leave the slot out. The partial index is
-- what the sweep asks every round: the slots not yet archived, by ends_at.

ALTER TABLE slots ADD COLUMN archived_at timestamptz;
CREATE INDEX slots_to_archive ON slots (ends_at) WHERE archived_at IS NULL;
