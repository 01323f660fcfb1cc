-- 0003_repairs.sql — an unknown idempotency key is NULL, and repairs are not events.
--
-- Only the event that creates a hold carries its key; a hold PostgreSQL first
-- learns of from a later event (or from reconcile/restore) has none to give.
-- hold_events stays what the streams said; what reconcile wrote to PostgreSQL
-- because Redis knew better goes to hold_repairs.

ALTER TABLE holds ALTER COLUMN idempotency_key DROP NOT NULL;
UPDATE holds SET idempotency_key = NULL WHERE idempotency_key = 'unknown:' || hold_id;
CREATE TABLE hold_repairs (
    repair_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hold_id     text NOT NULL,
    version     integer NOT NULL CHECK (version >= 1),
    status      text NOT NULL CHECK (status IN ('held', 'confirmed', 'cancelled', 'expired')),
    source      text NOT NULL CHECK (source IN ('reconcile')),
    repaired_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX hold_repairs_hold ON hold_repairs (hold_id);

-- Repairs an earlier version wrote into the audit as made-up stream entries.
INSERT INTO hold_repairs (hold_id, version, status, source, repaired_at)
SELECT hold_id, version, status, 'reconcile', recorded_at
FROM hold_events WHERE stream LIKE 'reconcile:%';
DELETE FROM hold_events WHERE stream LIKE 'reconcile:%';
