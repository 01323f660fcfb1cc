"""The durable record of revoked token ids (migrations/0006_revocations.sql).

Redis and every API process only mirror it (api/revocation.py).
"""

from __future__ import annotations

import time

from .db import Pool

__all__ = ["is_recorded", "record_revocation", "recorded_revocations"]


async def record_revocation(pool: Pool, jti: str, ttl_s: int) -> bool:
    """Record ``jti`` as revoked for ``ttl_s``; False if it already was.

    Rows past their expiry (their tokens can no longer be used anyway) are
    pruned on the way, a bounded number each time.
    """
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "DELETE FROM revoked_tokens WHERE jti IN (SELECT jti FROM revoked_tokens"
            " WHERE expires_at < now() ORDER BY expires_at LIMIT 100)"
        )
        inserted = await conn.fetchval(
            "INSERT INTO revoked_tokens (jti, expires_at)"
            " VALUES ($1, now() + make_interval(secs => $2))"
            " ON CONFLICT (jti) DO NOTHING RETURNING true",
            jti,
            float(ttl_s),
        )
    return bool(inserted)


async def is_recorded(pool: Pool, jti: str) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT true FROM revoked_tokens WHERE jti = $1 AND expires_at > now()", jti
        )
    )


async def recorded_revocations(pool: Pool) -> dict[str, float]:
    """Every revocation still in force: jti -> wall-clock expiry (epoch seconds)."""
    rows = await pool.fetch(
        "SELECT jti, extract(epoch FROM expires_at)::float8 AS until FROM revoked_tokens"
        " WHERE expires_at > now()"
    )
    now = time.time()
    return {r["jti"]: float(r["until"]) for r in rows if r["until"] > now}
