-- 0001_init.sql — users, the slot catalog, holds and the audit trail.
--
-- Redis owns live counters; these tables are the durable record. The sync
-- worker fills holds, hold_events and slot_events from the scripts' streams.

CREATE TABLE users (
    user_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         text NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
    password_hash text NOT NULL,
    role          text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_unique ON users (lower(email));

CREATE TABLE slots (
    slot_id    bigint PRIMARY KEY CHECK (slot_id > 0),
    capacity   integer NOT NULL CHECK (capacity >= 0),
    state      text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed')),
    label      text CHECK (length(label) <= 200),
    starts_at  timestamptz,
    ends_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (starts_at IS NULL OR ends_at IS NULL OR ends_at >= starts_at)
);
CREATE INDEX slots_starts_at ON slots (starts_at);
-- Ids for slots created without one; explicit ids skip over taken values.
CREATE SEQUENCE slots_auto_id START 1;

CREATE TABLE holds (
    hold_id         text PRIMARY KEY,
    slot_id         bigint NOT NULL REFERENCES slots (slot_id),
    user_id         bigint NOT NULL REFERENCES users (user_id),
    quantity        integer NOT NULL CHECK (quantity >= 1),
    status          text NOT NULL CHECK (status IN ('held', 'confirmed', 'cancelled', 'expired')),
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    confirmed_at    timestamptz,
    cancelled_at    timestamptz,
    expired_at      timestamptz,
    version         integer NOT NULL CHECK (version >= 1),
    CONSTRAINT holds_idempotency_unique UNIQUE (user_id, slot_id, idempotency_key),
    CHECK (expires_at > created_at),
    CHECK ((status = 'confirmed') <= (confirmed_at IS NOT NULL)),
    CHECK ((status = 'cancelled') <= (cancelled_at IS NOT NULL)),
    CHECK ((status = 'expired') <= (expired_at IS NOT NULL))
);
CREATE INDEX holds_user_newest ON holds (user_id, created_at DESC, hold_id DESC);
CREATE INDEX holds_slot_status ON holds (slot_id, status);

-- Append-only audit trail: one row per stream entry, written once.
CREATE TABLE hold_events (
    event_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream      text NOT NULL,
    entry_id    text NOT NULL,
    hold_id     text NOT NULL,
    slot_id     bigint NOT NULL,
    user_id     bigint NOT NULL,
    quantity    integer NOT NULL CHECK (quantity >= 1),
    status      text NOT NULL CHECK (status IN ('held', 'confirmed', 'cancelled', 'expired')),
    version     integer NOT NULL CHECK (version >= 1),
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT hold_events_entry_unique UNIQUE (stream, entry_id),
    CONSTRAINT hold_events_version_unique UNIQUE (hold_id, version)
);

CREATE TABLE slot_events (
    event_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream      text NOT NULL,
    entry_id    text NOT NULL,
    slot_id     bigint NOT NULL,
    capacity    integer NOT NULL,
    state       text NOT NULL,
    attributes  jsonb NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT slot_events_entry_unique UNIQUE (stream, entry_id)
);

CREATE FUNCTION refuse_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only (%)', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER hold_events_append_only BEFORE UPDATE OR DELETE ON hold_events
    FOR EACH ROW EXECUTE FUNCTION refuse_audit_change();
CREATE TRIGGER slot_events_append_only BEFORE UPDATE OR DELETE ON slot_events
    FOR EACH ROW EXECUTE FUNCTION refuse_audit_change();
