-- Tables of the row-lock design the benchmark compares against (bench/pg_app.py).
CREATE TABLE IF NOT EXISTS pg_slots (
    slot_id   bigint PRIMARY KEY,
    capacity  integer NOT NULL CHECK (capacity >= 0),
    remaining integer NOT NULL CHECK (remaining >= 0)
);
CREATE TABLE IF NOT EXISTS pg_holds (
    hold_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slot_id         bigint NOT NULL REFERENCES pg_slots (slot_id),
    user_id         bigint NOT NULL,
    quantity        integer NOT NULL CHECK (quantity >= 1),
    idempotency_key text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL DEFAULT now() + interval '5 minutes',
    UNIQUE (user_id, slot_id, idempotency_key)
);
