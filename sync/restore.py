"""Rebuild lost Redis partitions from PostgreSQL (fail closed until done)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson

from engine import Engine, Hold, Slot
from engine.client import RedisClient

from . import feed
from .db import Pool
from .drain import drain_stream
from .events import Entry, lock_partitions
from .group_restore import groups_for_restore
from .records import (
    HOLD_COLUMNS,
    SLOT_COLUMNS,
    hold_from_row,
    ms,
    slot_from_row,
    upsert_holds,
    upsert_slots,
)
from .sequence import recorded_sequence
from .waitlist import entries_for_restore, upsert_entries

__all__ = ["ensure_partitions", "restore_partition", "snapshot"]

_RESTORE_LOCK_S = 60


async def snapshot(
    pool: Pool, partitions: int, partition: int, idempotency_ttl_s: int
) -> tuple[list[Slot], list[Hold]]:
    """A partition's slots and the holds Redis must know: live ones, and finished
    ones still inside the idempotency memory (so a retried key replays). Archived
    slots and their holds stay out: PostgreSQL answers for them (sync/archive.py)."""
    slot_rows = await pool.fetch(
        f"SELECT {SLOT_COLUMNS} FROM slots WHERE slot_id % $1 = $2 AND archived_at IS NULL"
        " ORDER BY slot_id",
        partitions,
        partition,
    )
    slots = [slot_from_row(r) for r in slot_rows]
    hold_rows = await pool.fetch(
        f"SELECT {HOLD_COLUMNS} FROM holds"
        " WHERE slot_id % $1 = $2 AND (status IN ('held', 'confirmed')"
        " OR created_at > now() - make_interval(secs => $3))"
        " AND slot_id IN (SELECT slot_id FROM slots WHERE archived_at IS NULL)",
        partitions,
        partition,
        float(idempotency_ttl_s),
    )
    return slots, [hold_from_row(r) for r in hold_rows]


async def restore_partition(engine: Engine, redis: RedisClient, pool: Pool, partition: int) -> int:
    """Rebuild one partition from PostgreSQL; returns the number of holds loaded.

    Commands stop first (epoch marker gone), then whatever the stream still
    holds is written to PostgreSQL, so the snapshot includes every change Redis
    had made; only then is the partition loaded and opened again.
    """
    settings = engine.settings
    await engine.reset_partition(partition)
    await drain_stream(engine, redis, pool, partition)
    await _backfill_feed(pool, engine.keys.events(partition))
    slots, holds = await snapshot(pool, settings.partitions, partition, settings.idempotency_ttl_s)
    sequence = await recorded_sequence(pool, engine.keys.events(partition))
    since = datetime.now(UTC) - timedelta(seconds=settings.finished_retention_s)
    entries = await entries_for_restore(pool, [s.slot_id for s in slots], since)
    # Group records first: the partition stays closed until load_partition commits.
    stream = engine.keys.events(partition)
    await engine.groups.load(await groups_for_restore(pool, stream, since))
    epoch = f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
    await engine.load_partition(
        partition, slots, holds, epoch=epoch, entries=entries, sequence=sequence
    )
    return len(holds)


_UNFED = """
SELECT e.entry_id, e.hold_id, e.slot_id, e.user_id, e.quantity, e.status, e.version,
       e.occurred_at, h.created_at, h.expires_at
FROM hold_events e JOIN holds h USING (hold_id)
WHERE e.stream = $1 AND NOT EXISTS (
    SELECT 1 FROM feed f WHERE f.source = e.stream AND f.source_id = e.entry_id)
ORDER BY e.event_id
"""
_STATUS_TIME = {"held": "c", "confirmed": "cf", "cancelled": "ca", "expired": "xa"}


async def _backfill_feed(pool: Pool, stream: str) -> int:
    """Put in the event feed the audit rows it lacks: confirms written through by
    the API whose stream entries Redis lost before the drain read them (the drain
    writes the feed, sync/events.py). Called after the stream was drained."""
    async with pool.acquire() as conn, conn.transaction():
        entries = []
        for r in await conn.fetch(_UNFED, stream):
            event = {
                "i": r["hold_id"], "s": str(r["slot_id"]), "u": str(r["user_id"]),
                "q": r["quantity"], "st": r["status"], "v": r["version"],
                "c": ms(r["created_at"]), "e": ms(r["expires_at"]),
                _STATUS_TIME[r["status"]]: ms(r["occurred_at"]),
            }  # fmt: skip
            entries.append(Entry(stream, r["entry_id"], "h", orjson.dumps(event)))
        await feed.append(conn, entries)
    return len(entries)


async def ensure_partitions(
    engine: Engine,
    redis: RedisClient,
    pool: Pool,
    *,
    on_restored: Callable[[int, int], None] | None = None,
) -> list[int]:
    """Rebuild every partition that has lost its state, one process at a time each."""
    restored = []
    for partition in await engine.unavailable_partitions():
        lock = redis.lock(
            engine.keys.lock(f"restore:{partition}"),
            timeout=_RESTORE_LOCK_S,
            blocking=False,
        )
        if not await lock.acquire():
            continue  # another process is rebuilding it
        try:
            # Checked again under the lock: someone may have just finished.
            if partition not in await engine.unavailable_partitions():
                continue
            count = await restore_partition(engine, redis, pool, partition)
            restored.append(partition)
            if on_restored is not None:
                on_restored(partition, count)
        finally:
            await lock.release()
    return restored


async def restore_from_redis(engine: Engine, pool: Pool, partition: int) -> int:
    """Make PostgreSQL's current state match Redis for one partition (Redis wins)."""
    slots = await engine.partition_slots(partition)
    holds = await engine.partition_holds(partition)
    entries = await engine.waitlist.partition_entries(partition)
    async with pool.acquire() as conn, conn.transaction():
        await lock_partitions(conn, [engine.keys.events(partition)])
        await upsert_slots(conn, slots)
        await upsert_holds(conn, holds, newer_only=False)
        await upsert_entries(conn, entries)
    return len(holds)
