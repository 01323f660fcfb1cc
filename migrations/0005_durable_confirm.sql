-- 0005_durable_confirm.sql — PostgreSQL arbitrates confirms; Redis going back in
-- time is detected.
--
-- slots.confirmed is the quantity confirmed on the slot, kept by a trigger on
-- holds, so every writer (the API's write-through of a confirm, the sync drain,
-- restore --from redis, reconcile --repair) keeps it, and none can take it past
-- the slot's capacity: such a write fails with check_violation
-- (slots_confirmed_within_capacity) and its transaction is rolled back.
--
-- partition_sequences keeps, per partition stream, the highest event sequence
-- applied here and the stream entry id that carried it (see sync/sequence.py).

ALTER TABLE slots ADD COLUMN confirmed integer NOT NULL DEFAULT 0;

UPDATE slots s SET confirmed = c.total
FROM (SELECT slot_id, sum(quantity)::integer AS total FROM holds
      WHERE status = 'confirmed' GROUP BY slot_id) c
WHERE s.slot_id = c.slot_id;

CREATE FUNCTION count_confirmed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta integer := 0;
    slot_capacity integer;
    now_confirmed integer;
BEGIN
    IF NEW.status = 'confirmed' THEN
        delta := NEW.quantity;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.status = 'confirmed' THEN
        delta := delta - OLD.quantity;
    END IF;
    IF delta = 0 THEN
        RETURN NULL;
    END IF;
    UPDATE slots SET confirmed = confirmed + delta WHERE slot_id = NEW.slot_id
        RETURNING capacity, confirmed INTO slot_capacity, now_confirmed;
    IF delta > 0 AND now_confirmed > slot_capacity THEN
        RAISE EXCEPTION 'slot % would have % confirmed, capacity %',
            NEW.slot_id, now_confirmed, slot_capacity
            USING ERRCODE = 'check_violation', CONSTRAINT = 'slots_confirmed_within_capacity';
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER holds_count_confirmed AFTER INSERT OR UPDATE OF status, quantity ON holds
    FOR EACH ROW EXECUTE FUNCTION count_confirmed();

CREATE TABLE partition_sequences (
    stream     text PRIMARY KEY,
    seq        bigint NOT NULL CHECK (seq >= 0),
    entry_ms   bigint NOT NULL,
    entry_no   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
