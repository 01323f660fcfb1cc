"""Rebuild lost Redis partitions from PostgreSQL (fail closed until done)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from engine import Engine, Hold, Slot

from .drain import drain_stream
from .records import HOLD_COLUMNS, hold_from_row, unknown_key
from .sequence import recorded_sequence

__all__ = ["ensure_partitions", "restore_partition", "snapshot"]

_RESTORE_LOCK_S = 60


async def snapshot(
    pool: Any, partitions: int, partition: int, idempotency_ttl_s: int
) -> tuple[list[Slot], list[Hold]]:
    """A partition's slots and the holds Redis must know: live ones, and finished
    ones still inside the idempotency memory (so a retried key replays)."""
    slot_rows = await pool.fetch(
        "SELECT slot_id, capacity, state, label, starts_at, ends_at FROM slots"
        " WHERE slot_id % $1 = $2 ORDER BY slot_id",
        partitions,
        partition,
    )
    slots = [
        Slot(
            slot_id=r["slot_id"],
            capacity=r["capacity"],
            remaining=r["capacity"],
            held=0,
            confirmed=0,
            state=r["state"],
            label=r["label"],
            starts_at=r["starts_at"].isoformat() if r["starts_at"] else None,
            ends_at=r["ends_at"].isoformat() if r["ends_at"] else None,
        )
        for r in slot_rows
    ]
    hold_rows = await pool.fetch(
        f"SELECT {HOLD_COLUMNS} FROM holds"
        " WHERE slot_id % $1 = $2 AND (status IN ('held', 'confirmed')"
        " OR created_at > now() - make_interval(secs => $3))",
        partitions,
        partition,
        float(idempotency_ttl_s),
    )
    return slots, [hold_from_row(r) for r in hold_rows]


async def restore_partition(engine: Engine, redis: Any, pool: Any, partition: int) -> int:
    """Rebuild one partition from PostgreSQL; returns the number of holds loaded.

    Commands stop first (epoch marker gone), then whatever the stream still
    holds is written to PostgreSQL, so the snapshot includes every change Redis
    had made; only then is the partition loaded and opened again.
    """
    settings = engine.settings
    await engine.reset_partition(partition)
    await drain_stream(engine, redis, pool, partition)
    slots, holds = await snapshot(pool, settings.partitions, partition, settings.idempotency_ttl_s)
    sequence = await recorded_sequence(pool, engine.keys.events(partition))
    epoch = f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
    await engine.load_partition(partition, slots, holds, epoch=epoch, sequence=sequence)
    return len(holds)


async def ensure_partitions(
    engine: Engine,
    redis: Any,
    pool: Any,
    *,
    on_restored: Callable[[int, int], None] | None = None,
) -> list[int]:
    """Rebuild every partition that has lost its state, one process at a time each."""
    restored = []
    for partition in await engine.unavailable_partitions():
        lock = redis.lock(
            f"{engine.settings.key_prefix}lock:restore:{partition}",
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


async def restore_from_redis(engine: Engine, pool: Any, partition: int) -> int:
    """Make PostgreSQL's current state match Redis for one partition (Redis wins)."""
    slots = await engine.partition_slots(partition)
    holds = await engine.partition_holds(partition)
    async with pool.acquire() as conn, conn.transaction():
        await conn.executemany(
            "INSERT INTO slots (slot_id, capacity, state, label, starts_at, ends_at)"
            " VALUES ($1, $2, $3, $4, $5::text::timestamptz, $6::text::timestamptz)"
            " ON CONFLICT (slot_id) DO UPDATE SET capacity = excluded.capacity,"
            " state = excluded.state, label = excluded.label, starts_at = excluded.starts_at,"
            " ends_at = excluded.ends_at, updated_at = now()",
            [(s.slot_id, s.capacity, s.state, s.label, s.starts_at, s.ends_at) for s in slots],
        )
        await conn.executemany(
            "INSERT INTO holds (hold_id, slot_id, user_id, quantity, status, idempotency_key,"
            " created_at, expires_at, confirmed_at, cancelled_at, expired_at, version)"
            " VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7 / 1000.0), to_timestamp($8 / 1000.0),"
            " to_timestamp($9 / 1000.0), to_timestamp($10 / 1000.0), to_timestamp($11 / 1000.0),"
            " $12) ON CONFLICT (hold_id) DO UPDATE SET status = excluded.status,"
            " confirmed_at = excluded.confirmed_at, cancelled_at = excluded.cancelled_at,"
            " expired_at = excluded.expired_at, version = excluded.version",
            [
                (
                    h.hold_id,
                    h.slot_id,
                    int(h.user_id),
                    h.quantity,
                    h.status,
                    h.idempotency_key or unknown_key(h.hold_id),
                    h.created_at_ms,
                    h.expires_at_ms,
                    h.confirmed_at_ms,
                    h.cancelled_at_ms,
                    h.expired_at_ms,
                    h.version,
                )
                for h in holds
            ],
        )
    return len(holds)
