-- 0006_revocations.sql — revoked token ids, durable: Redis keeps only a mirror
-- (api/revocation.py), reloaded from here when Redis has lost it.

CREATE TABLE revoked_tokens (
    jti        text PRIMARY KEY CHECK (length(jti) BETWEEN 1 AND 200),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);
