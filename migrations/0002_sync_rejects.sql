-- 0002_sync_rejects.sql — events the durable record refused, kept for an operator.
--
-- A batch that violates a constraint is retried entry by entry; an entry that
-- still fails lands here (and is acknowledged) instead of blocking its stream.

CREATE TABLE sync_rejects (
    reject_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream      text NOT NULL,
    entry_id    text NOT NULL,
    payload     text NOT NULL,
    error       text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sync_rejects_entry_unique UNIQUE (stream, entry_id)
);
