-- 0008_hold_groups.sql — the audit trail of hold groups (issue 13, engine/groups.py).
--
-- One row per group event of a partition's stream (lua/group_home.lua): held,
-- confirmed, cancelled. The members are holds, recorded as any hold is (holds,
-- hold_events); members names them in item order: [[hold id, slot id, quantity]].
-- An expired group has no event of its own: its members' hold.expired events say it.

CREATE TABLE group_events (
    event_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream      text NOT NULL,
    entry_id    text NOT NULL,
    group_id    text NOT NULL,
    user_id     bigint NOT NULL,
    status      text NOT NULL CHECK (status IN ('held', 'confirmed', 'cancelled')),
    version     integer NOT NULL CHECK (version >= 1),
    expires_at  timestamptz NOT NULL,
    members     jsonb NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT group_events_entry_unique UNIQUE (stream, entry_id)
);
CREATE INDEX group_events_group ON group_events (group_id, version);

CREATE TRIGGER group_events_append_only BEFORE UPDATE OR DELETE ON group_events
    FOR EACH ROW EXECUTE FUNCTION refuse_audit_change();
