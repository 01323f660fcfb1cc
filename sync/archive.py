"""The archive sweep: slots that are over leave Redis with their holds.

A slot whose ``ends_at`` is past by the archive delay (SLOTKEEPER_SLOT_ARCHIVE_AFTER_S)
is taken out of Redis, so Redis memory is bounded by what is live, not by every
slot ever sold. PostgreSQL keeps it and answers for it from then on
(sync/archived.py). Per partition with slots due:

1. the partition's stream is drained, so PostgreSQL has every event about them;
2. per slot, PostgreSQL's holds of the slot (id, version, key) and confirmed
   quantity go to one script call (engine/archive.py) that removes the slot, those
   holds and their idempotency records only if Redis agrees: nothing live (no
   held hold, nobody waiting), the same confirmed quantity, no hold at a newer
   version. Otherwise the slot is left for a later round;
3. the slot is marked archived in PostgreSQL (the drain marks it too, from the
   script's archive event, should this process die in between).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from engine import Engine, StateUnavailable
from engine.archive import Archiver, ArchiveResult, StoredHold
from engine.client import RedisClient

from .archived import mark_archived
from .db import Pool
from .drain import drain_stream
from .records import at

__all__ = ["ArchiveStats", "archive_finished", "archive_slot"]

log = logging.getLogger("slotkeeper.sync")

DEFAULT_LIMIT = 1000  # slots looked at per round; the rest wait for the next one
# Slots of one partition archived at once (each is a script call and an UPDATE;
# bounded so the Redis and PostgreSQL pools are never exhausted).
_AT_ONCE = 8

# A slot with a member of a hold group waits until every slot of the group is due
# too, so a group (a booking across slots) leaves Redis as a whole, never half.
_DUE = """
SELECT s.slot_id FROM slots s
WHERE s.archived_at IS NULL AND s.ends_at < $1
    AND NOT EXISTS (
        SELECT 1 FROM holds h JOIN holds o ON o.group_id = h.group_id
        JOIN slots os ON os.slot_id = o.slot_id
        WHERE h.slot_id = s.slot_id AND h.group_id IS NOT NULL
            AND os.archived_at IS NULL AND (os.ends_at IS NULL OR os.ends_at >= $1))
ORDER BY s.ends_at, s.slot_id LIMIT $2
"""
_HOLDS = """
SELECT slot_id, hold_id, version, user_id, idempotency_key, status, quantity
FROM holds WHERE slot_id = ANY($1::bigint[])
"""


@dataclass(slots=True)
class ArchiveStats:
    archived: int = 0  # slots taken out of Redis (or found already gone)
    holds: int = 0  # holds taken out of Redis with them
    waiting: int = 0  # slots left for later: something live, or PostgreSQL behind


async def archive_slot(
    archiver: Archiver,
    pool: Pool,
    slot_id: int,
    *,
    now_ms: int,
    rows: Sequence[asyncpg.Record] | None = None,
) -> ArchiveResult:
    """One slot, once its partition is drained: removed from Redis if Redis agrees
    with PostgreSQL, then marked archived. ``rows``: its holds, if already read."""
    if rows is None:
        rows = await pool.fetch(_HOLDS, [slot_id])
    confirmed = sum(r["quantity"] for r in rows if r["status"] == "confirmed")
    holds = [
        StoredHold(r["hold_id"], r["version"], str(r["user_id"]), r["idempotency_key"] or "")
        for r in rows
    ]
    result = await archiver.archive(slot_id, confirmed, holds, now_ms=now_ms)
    if result.status in ("archived", "not_found"):
        await mark_archived(pool, [slot_id], now_ms)
    return result


async def _archive_slots(
    archiver: Archiver, pool: Pool, slot_ids: list[int], now_ms: int
) -> list[ArchiveResult]:
    """Slots of one drained partition, a few at once; their results in order."""
    holds: dict[int, list[asyncpg.Record]] = {slot_id: [] for slot_id in slot_ids}
    for row in await pool.fetch(_HOLDS, slot_ids):
        holds[row["slot_id"]].append(row)
    gate = asyncio.Semaphore(_AT_ONCE)

    async def one(slot_id: int) -> ArchiveResult:
        async with gate:
            return await archive_slot(archiver, pool, slot_id, now_ms=now_ms, rows=holds[slot_id])

    return list(await asyncio.gather(*(one(slot_id) for slot_id in slot_ids)))


async def archive_finished(
    engine: Engine,
    redis: RedisClient,
    pool: Pool,
    *,
    after_s: int,
    now_ms: int | None = None,
    limit: int = DEFAULT_LIMIT,
    archiver: Archiver | None = None,
) -> ArchiveStats:
    """Archive up to ``limit`` slots whose ends_at is more than ``after_s`` before
    ``now_ms`` (default: this host's clock; tests pass a simulated one)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    archiver = archiver or Archiver(redis, engine.settings)
    rows = await pool.fetch(_DUE, at(now_ms - after_s * 1000), limit)
    by_partition: dict[int, list[int]] = defaultdict(list)
    for row in rows:
        by_partition[engine.keys.partition_of(row["slot_id"])].append(row["slot_id"])
    stats = ArchiveStats()
    for partition, slot_ids in sorted(by_partition.items()):
        with contextlib.suppress(StateUnavailable):  # rebuilt first, archived next round
            await drain_stream(engine, redis, pool, partition, consumer="archive")
            results = await _archive_slots(archiver, pool, slot_ids, now_ms)
            for slot_id, result in zip(slot_ids, results, strict=True):
                if result.status in ("archived", "not_found"):
                    stats.archived += 1
                    stats.holds += result.removed
                else:
                    stats.waiting += 1
                    log.info("slot %s not archived yet: %s", slot_id, result.reason)
    return stats
