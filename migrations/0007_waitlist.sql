-- 0007_waitlist.sql — waitlist entries and their audit trail (issue 14).
--
-- waitlist_entries: each entry as it is now (the drain writes the newest version);
-- waitlist_events: one row per stream entry, written once, like hold_events.
-- An offered entry's hold is a normal row of holds (hold_id = entry_id).
CREATE TABLE waitlist_entries (
    entry_id        text PRIMARY KEY,
    slot_id         bigint NOT NULL REFERENCES slots (slot_id),
    user_id         bigint NOT NULL REFERENCES users (user_id),
    quantity        integer NOT NULL CHECK (quantity >= 1),
    status          text NOT NULL CHECK (status IN ('waiting', 'offered', 'left', 'lapsed')),
    -- Only the event that creates the entry carries its key (as for holds).
    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    seq             bigint NOT NULL CHECK (seq >= 1),  -- join order within the partition
    joined_at       timestamptz NOT NULL,
    lapses_at       timestamptz NOT NULL,
    offered_at      timestamptz,
    left_at         timestamptz,
    lapsed_at       timestamptz,
    hold_id         text,
    version         integer NOT NULL CHECK (version >= 1),
    CHECK ((status = 'offered') <= (offered_at IS NOT NULL AND hold_id IS NOT NULL)),
    CHECK ((status = 'left') <= (left_at IS NOT NULL)),
    CHECK ((status = 'lapsed') <= (lapsed_at IS NOT NULL))
);
CREATE INDEX waitlist_entries_waiting ON waitlist_entries (slot_id, seq) WHERE status = 'waiting';

CREATE TABLE waitlist_events (
    event_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream      text NOT NULL,
    entry_id    text NOT NULL,  -- the stream entry
    waitlist_id text NOT NULL,  -- the waitlist entry
    slot_id     bigint NOT NULL,
    user_id     bigint NOT NULL,
    quantity    integer NOT NULL CHECK (quantity >= 1),
    status      text NOT NULL CHECK (status IN ('waiting', 'offered', 'left', 'lapsed')),
    version     integer NOT NULL CHECK (version >= 1),
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT waitlist_events_entry_unique UNIQUE (stream, entry_id),
    CONSTRAINT waitlist_events_version_unique UNIQUE (waitlist_id, version)
);

CREATE TRIGGER waitlist_events_append_only BEFORE UPDATE OR DELETE ON waitlist_events
    FOR EACH ROW EXECUTE FUNCTION refuse_audit_change();
