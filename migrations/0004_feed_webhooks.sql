-- 0004_feed_webhooks.sql — the event feed, webhook endpoints and their outbox.
-- (Numbered after its issue, #15, so that migrations written on parallel branches
-- cannot take the same version; versions only need to be distinct and ordered.)
--
-- feed: one row per transition of the durable record, whatever its kind (hold,
-- slot; groups and waitlist later). feed_id is the public cursor. Ids are taken
-- under a transaction-level advisory lock held until commit (sync/feed.py), so
-- they become visible in id order: a reader that saw id N never later finds a
-- new row below N. Gaps are normal (a rolled-back batch, a duplicate entry).
CREATE SEQUENCE feed_ids;

CREATE TABLE feed (
    feed_id     bigint PRIMARY KEY,
    type        text NOT NULL CHECK (type ~ '^[a-z_]+\.[a-z_]+$'),
    slot_id     bigint,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    data        json NOT NULL,  -- json, not jsonb: kept as written (key order)
    -- Where the row came from (a stream and its entry id), written once.
    source      text NOT NULL,
    source_id   text NOT NULL,
    CONSTRAINT feed_source_unique UNIQUE (source, source_id)
);
CREATE INDEX feed_slot ON feed (slot_id, feed_id);
CREATE INDEX feed_type ON feed (type, feed_id);

CREATE TRIGGER feed_append_only BEFORE UPDATE OR DELETE ON feed
    FOR EACH ROW EXECUTE FUNCTION refuse_audit_change();

CREATE TABLE webhooks (
    webhook_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url             text NOT NULL CHECK (length(url) BETWEEN 8 AND 2048),
    events          text[] NOT NULL CHECK (cardinality(events) >= 1),
    secret          text NOT NULL,
    -- After a rotation the old secret signs too, until previous_expires_at.
    previous_secret text,
    previous_expires_at timestamptz,
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text,
    disabled_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The outbox: one row per (endpoint, feed event), written in the transaction that
-- writes the event. Delivered head first per (endpoint, slot).
CREATE TABLE webhook_deliveries (
    delivery_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      bigint NOT NULL REFERENCES webhooks (webhook_id) ON DELETE CASCADE,
    feed_id         bigint NOT NULL REFERENCES feed (feed_id),
    order_key       bigint NOT NULL,  -- the slot, 0 for events without one
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- The first failure (or re-enabling the endpoint) sets it; retries stop (and the
    -- endpoint is disabled) the retry window after it.
    retry_from      timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    last_status     integer,
    last_error      text,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_deliveries_unique UNIQUE (webhook_id, feed_id)
);
CREATE INDEX webhook_deliveries_queue ON webhook_deliveries (webhook_id, order_key, feed_id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, delivery_id DESC);
