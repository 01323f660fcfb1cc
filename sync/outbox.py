"""Webhook endpoints and their outbox in PostgreSQL.

``enqueue`` runs in the transaction that writes the feed, so an event and its
deliveries commit together (or not at all). Deliveries wait for their turn per
(endpoint, slot): only the oldest pending one of each is ever handed out, so a
receiver sees a slot's events in order, whatever the number of workers.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

__all__ = [
    "ENQUEUE",
    "ROTATION_GRACE_S",
    "claim_due",
    "create_webhook",
    "delete_webhook",
    "deliveries",
    "enqueue",
    "get_webhook",
    "list_webhooks",
    "new_secret",
    "record_failure",
    "record_success",
    "rotate_secret",
    "update_webhook",
]

# After a rotation the previous secret keeps signing (a second signature) this long.
ROTATION_GRACE_S = 86_400
_SECRET_BYTES = 32

_COLUMNS = (
    "webhook_id, url, events, enabled, disabled_reason, disabled_at, created_at, updated_at,"
    " previous_expires_at"
)


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` + base64 of random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


async def enqueue(conn: Any, feed_ids: Sequence[int]) -> None:
    """One delivery per subscribed endpoint for each of these feed rows.

    Disabled endpoints keep collecting theirs: re-enabled, they resume where they
    stopped and lose nothing.
    """
    await conn.execute(
        ENQUEUE.format(source="feed", where="WHERE f.feed_id = ANY($1::bigint[])"),
        list(feed_ids),
    )


# The deliveries of the feed rows in ``source`` (the feed, or the rows a statement
# just inserted there: sync/feed.py), ``where`` filtering them.
ENQUEUE = (
    "INSERT INTO webhook_deliveries (webhook_id, feed_id, order_key)"
    " SELECT w.webhook_id, f.feed_id, coalesce(f.slot_id, 0)"
    " FROM {source} f JOIN webhooks w ON w.events && ARRAY['*', f.type]"
    " {where} ORDER BY f.feed_id, w.webhook_id"
    " ON CONFLICT DO NOTHING"
)


# -- endpoints ------------------------------------------------------------------


async def create_webhook(pool: Any, url: str, events: Sequence[str]) -> tuple[dict[str, Any], str]:
    """The new endpoint and its secret (the only time the secret is returned)."""
    secret = new_secret()
    row = await pool.fetchrow(
        f"INSERT INTO webhooks (url, events, secret) VALUES ($1, $2, $3) RETURNING {_COLUMNS}",
        url,
        list(events),
        secret,
    )
    return dict(row), secret


async def list_webhooks(pool: Any) -> list[dict[str, Any]]:
    rows = await pool.fetch(f"SELECT {_COLUMNS} FROM webhooks ORDER BY webhook_id")
    return [dict(r) for r in rows]


async def get_webhook(pool: Any, webhook_id: int) -> dict[str, Any] | None:
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM webhooks WHERE webhook_id = $1", webhook_id)
    return None if row is None else dict(row)


async def update_webhook(
    pool: Any,
    webhook_id: int,
    *,
    url: str | None = None,
    events: Sequence[str] | None = None,
    enabled: bool | None = None,
) -> dict[str, Any] | None:
    """Change what is given. Enabling a disabled endpoint restarts its retry window."""
    async with pool.acquire() as conn, conn.transaction():
        was = await conn.fetchval(
            "SELECT enabled FROM webhooks WHERE webhook_id = $1 FOR UPDATE", webhook_id
        )
        if was is None:
            return None
        row = await conn.fetchrow(
            "UPDATE webhooks SET url = coalesce($2, url), events = coalesce($3, events),"
            " enabled = coalesce($4, enabled),"
            " disabled_reason = CASE WHEN $4 THEN NULL"
            "   WHEN $4 = false THEN 'disabled by an administrator' ELSE disabled_reason END,"
            " disabled_at = CASE WHEN $4 THEN NULL WHEN $4 = false THEN now()"
            "   ELSE disabled_at END,"
            f" updated_at = now() WHERE webhook_id = $1 RETURNING {_COLUMNS}",
            webhook_id,
            url,
            None if events is None else list(events),
            enabled,
        )
        if enabled and not was:
            await conn.execute(
                "UPDATE webhook_deliveries SET retry_from = now(), next_attempt_at = now()"
                " WHERE webhook_id = $1 AND status = 'pending'",
                webhook_id,
            )
        return dict(row)


async def delete_webhook(pool: Any, webhook_id: int) -> bool:
    deleted = await pool.fetchval(
        "DELETE FROM webhooks WHERE webhook_id = $1 RETURNING webhook_id", webhook_id
    )
    return deleted is not None


async def rotate_secret(pool: Any, webhook_id: int) -> tuple[dict[str, Any], str] | None:
    """A new secret; the current one stays valid for ROTATION_GRACE_S."""
    secret = new_secret()
    row = await pool.fetchrow(
        "UPDATE webhooks SET previous_secret = secret, secret = $2,"
        " previous_expires_at = now() + make_interval(secs => $3), updated_at = now()"
        f" WHERE webhook_id = $1 RETURNING {_COLUMNS}",
        webhook_id,
        secret,
        ROTATION_GRACE_S,
    )
    return None if row is None else (dict(row), secret)


async def deliveries(
    pool: Any, webhook_id: int, *, before: int | None, limit: int
) -> list[dict[str, Any]]:
    """The delivery log, newest first."""
    rows = await pool.fetch(
        "SELECT d.delivery_id, d.feed_id, f.type, d.status, d.attempts, d.next_attempt_at,"
        " d.last_attempt_at, d.last_status, d.last_error, d.delivered_at, d.created_at"
        " FROM webhook_deliveries d JOIN feed f USING (feed_id)"
        " WHERE d.webhook_id = $1 AND ($2::bigint IS NULL OR d.delivery_id < $2)"
        " ORDER BY d.delivery_id DESC LIMIT $3",
        webhook_id,
        before,
        limit,
    )
    return [dict(r) for r in rows]


# -- the dispatcher's side ----------------------------------------------------------


async def claim_due(pool: Any, *, limit: int, lease_s: float) -> list[dict[str, Any]]:
    """Take up to ``limit`` due deliveries, each the oldest pending one of its
    (endpoint, slot), and lease them for ``lease_s``: a worker that dies holding
    one gives it back when the lease runs out (at least once)."""
    rows = await pool.fetch(
        """
        UPDATE webhook_deliveries d
        SET next_attempt_at = now() + make_interval(secs => $2)
        FROM (
            SELECT q.delivery_id FROM webhook_deliveries q
            JOIN webhooks w ON w.webhook_id = q.webhook_id AND w.enabled
            WHERE q.status = 'pending' AND q.next_attempt_at <= now()
              AND NOT EXISTS (
                SELECT 1 FROM webhook_deliveries e
                WHERE e.webhook_id = q.webhook_id AND e.order_key = q.order_key
                  AND e.status = 'pending' AND e.feed_id < q.feed_id)
            ORDER BY q.feed_id
            LIMIT $1
            FOR UPDATE OF q SKIP LOCKED
        ) due, webhooks w, feed f
        WHERE d.delivery_id = due.delivery_id AND w.webhook_id = d.webhook_id
          AND f.feed_id = d.feed_id
        RETURNING d.delivery_id, d.webhook_id, d.attempts, d.retry_from, w.url, w.secret,
                  CASE WHEN w.previous_expires_at > now() THEN w.previous_secret END
                      AS previous_secret,
                  f.feed_id, f.type, f.slot_id, f.occurred_at, f.data
        """,
        limit,
        lease_s,
    )
    return [dict(r) for r in rows]


async def record_success(pool: Any, delivery_id: int, status: int) -> None:
    await pool.execute(
        "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1,"
        " last_attempt_at = now(), delivered_at = now(), last_status = $2, last_error = NULL"
        " WHERE delivery_id = $1 AND status = 'pending'",
        delivery_id,
        status,
    )


async def record_failure(
    pool: Any,
    delivery: dict[str, Any],
    *,
    status: int | None,
    error: str,
    retry_at: datetime | None,
) -> None:
    """A failed attempt: retry at ``retry_at``, or (None) disable the endpoint."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, last_attempt_at = now(),"
            " last_status = $2, last_error = $3, next_attempt_at = coalesce($4, now()),"
            # The retry window opens at the first failure, not when the event was queued.
            " retry_from = CASE WHEN attempts = 0 THEN now() ELSE retry_from END"
            " WHERE delivery_id = $1 AND status = 'pending'",
            delivery["delivery_id"],
            status,
            error[:500],
            retry_at,
        )
        if retry_at is None:
            await conn.execute(
                "UPDATE webhooks SET enabled = false, disabled_at = now(), updated_at = now(),"
                " disabled_reason = $2 WHERE webhook_id = $1 AND enabled",
                delivery["webhook_id"],
                f"event {delivery['feed_id']} could not be delivered since "
                f"{delivery['retry_from'].isoformat(timespec='seconds')}: {error}"[:500],
            )
