"""Drain the partitions' event streams into PostgreSQL through a consumer group.

Order of a batch: read (claim stale pending entries first, then new ones) ->
write to PostgreSQL in one transaction -> XACK. A worker killed anywhere in
between leaves its entries pending; another consumer claims them after
``claim_idle_ms``; the writes are idempotent (unique entry ids, version-guarded
upserts), so a batch applied twice changes nothing the second time.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from engine import Engine
from engine.client import RedisClient
from engine.sequence import fail_closed

from .db import Pool
from .events import Entry, write_batch

__all__ = [
    "GROUP",
    "DrainStats",
    "drain_all",
    "drain_partition",
    "drain_stream",
    "ensure_group",
    "stream_entries",
    "sync_lag_ms",
]

GROUP = "slotkeeper-sync"


@dataclass(slots=True)
class DrainStats:
    written: int = 0
    rejected: int = 0
    claimed: int = 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def ensure_group(redis: RedisClient, stream: str) -> None:
    try:
        await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def stream_entries(stream: str, raw: list[Any]) -> list[Entry]:
    """XRANGE / XREADGROUP items of ``stream`` as entries to write."""
    out = []
    for entry_id, fields in raw:
        if not fields:  # deleted while pending (trimmed): nothing to write
            continue
        for key, value in fields.items():
            out.append(Entry(stream, _text(entry_id), _text(key), value))
    return out


# What a batch's reads may skip, remembered in this process. A consumer that
# acknowledged all it read from a stream has nothing of its own pending there: no
# XREADGROUP 0. Entries of a consumer that died wait claim_idle_ms anyway: XAUTOCLAIM
# runs once per quarter of it per stream, not every batch. The group is created when
# a read says it is missing (NOGROUP), not checked every batch. Worst case (Redis
# lost an XACK) entries wait for a claim, never are lost: the stream keeps them.
_acknowledged: set[tuple[str, str]] = set()
_claimed_at: dict[str, float] = {}


def _claim_due(stream: str, claim_idle_ms: int) -> bool:
    now = time.monotonic()
    if claim_idle_ms > 0 and now - _claimed_at.get(stream, -math.inf) < claim_idle_ms / 4000:
        return False
    _claimed_at[stream] = now
    return True


async def _read(
    redis: RedisClient, stream: str, consumer: str, batch: int, claim_idle_ms: int,
    block_ms: int | None,
) -> tuple[list[Any], int]:  # fmt: skip
    """The entries of a batch, and how many of them were pending before."""
    # This consumer's own unacknowledged entries first (its last write failed, e.g.
    # PostgreSQL was down): nobody else takes them before claim_idle_ms.
    raw: list[Any] = []
    if (stream, consumer) not in _acknowledged:
        for _, items in await redis.xreadgroup(GROUP, consumer, {stream: "0"}, count=batch) or []:
            raw.extend(items)
    # Then entries another consumer read and never acknowledged (it died).
    if len(raw) < batch and _claim_due(stream, claim_idle_ms):
        _, claimed, _ = await redis.xautoclaim(
            stream, GROUP, consumer, min_idle_time=claim_idle_ms, start_id="0-0", count=batch
        )
        seen = {entry_id for entry_id, _ in raw}
        raw.extend(item for item in claimed if item[0] not in seen)
    pending = len(raw)
    if len(raw) < batch:
        reply = await redis.xreadgroup(
            GROUP, consumer, {stream: ">"}, count=batch - len(raw), block=block_ms
        )
        for _, items in reply or []:
            raw.extend(items)
    return raw, pending


async def drain_partition(
    engine: Engine,
    redis: RedisClient,
    pool: Pool,
    partition: int,
    *,
    consumer: str,
    batch: int = 500,
    claim_idle_ms: int = 30_000,
    block_ms: int | None = None,
) -> DrainStats:
    """One batch of one partition's stream. Returns what it did."""
    stream = engine.keys.events(partition)
    stats = DrainStats()
    try:
        raw, stats.claimed = await _read(redis, stream, consumer, batch, claim_idle_ms, block_ms)
    except ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        await ensure_group(redis, stream)
        _acknowledged.discard((stream, consumer))
        _claimed_at.pop(stream, None)
        raw, stats.claimed = await _read(redis, stream, consumer, batch, claim_idle_ms, block_ms)
    if not raw:
        _acknowledged.add((stream, consumer))
        return stats
    _acknowledged.discard((stream, consumer))  # until the XACK went through
    entries = stream_entries(stream, raw)
    rewound: set[str] = set()
    stats.rejected = await write_batch(pool, entries, rewound=rewound)
    if rewound:  # Redis went back in time: stop selling until rebuilt
        await fail_closed(redis, engine.keys, partition)
    stats.written = len(entries) - stats.rejected
    await redis.xack(stream, GROUP, *[entry_id for entry_id, _ in raw])
    _acknowledged.add((stream, consumer))
    await _trim(redis, stream)
    return stats


async def _trim(redis: RedisClient, stream: str) -> None:
    """Drop entries below everything not yet acknowledged (never an unwritten one)."""
    floor = await _oldest_unacknowledged(redis, stream)
    if floor is not None:
        await redis.xtrim(stream, minid=floor, approximate=False)


async def _oldest_unacknowledged(redis: RedisClient, stream: str) -> str | None:
    """The id of the oldest entry not acknowledged: pending, or not yet delivered."""
    # The last delivered id is read before the pending list: an entry another
    # consumer reads in between is then above `last` (kept), or in the list.
    groups = await redis.xinfo_groups(stream)
    last = next((g["last-delivered-id"] for g in groups if _text(g["name"]) == GROUP), None)
    if last is None:  # no consumer group yet: nothing was ever acknowledged
        first = await redis.xrange(stream, count=1)
        return _text(first[0][0]) if first else None
    pending = await redis.xpending(stream, GROUP)
    if pending and pending.get("pending"):
        return _text(pending["min"])
    after = await redis.xrange(stream, min=f"({_text(last)}", count=1)
    if after:
        return _text(after[0][0])
    # Everything delivered and acknowledged: keep nothing at or below `last`.
    ms, _, seq = _text(last).partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


async def _oldest_unwritten_ms(redis: RedisClient, stream: str) -> int | None:
    """Redis time (ms) of the oldest entry of ``stream`` not yet written, if any."""
    if not await redis.exists(stream):
        return None
    try:
        first = await _oldest_unacknowledged(redis, stream)
    except ResponseError:  # no group yet: everything is unwritten
        entries = await redis.xrange(stream, count=1)
        first = _text(entries[0][0]) if entries else None
    if first is None or not await redis.xrange(stream, min=first, count=1):
        return None
    return int(first.partition("-")[0])


async def sync_lag_ms(engine: Engine, redis: RedisClient) -> int:
    """Age of the oldest event not yet written to PostgreSQL, over all partitions."""
    # Redis time, like the stream ids: a skewed clock here must not read as lag.
    seconds, micros = await redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    # The partitions are asked at once: readyz and /metrics call this.
    found = await asyncio.gather(
        *(
            _oldest_unwritten_ms(redis, engine.keys.events(p))
            for p in range(engine.settings.partitions)
        )
    )
    oldest = min((ms for ms in found if ms is not None), default=None)
    return 0 if oldest is None else max(0, now_ms - oldest)


async def drain_stream(
    engine: Engine, redis: RedisClient, pool: Pool, partition: int, *, consumer: str = "drain"
) -> int:
    """Drain one partition's stream until nothing is left to read; entries written.

    Entries pending on other consumers are claimed at once (idle 0): the caller
    is making the stream's content durable before acting on PostgreSQL's copy.
    """
    total = 0
    while True:
        stats = await drain_partition(
            engine, redis, pool, partition, consumer=consumer, claim_idle_ms=0
        )
        total += stats.written
        if stats.written + stats.rejected == 0:
            return total


async def drain_all(
    engine: Engine, redis: RedisClient, pool: Pool, *, consumer: str = "drain-all"
) -> int:
    """Drain every partition until empty; returns entries written (tests, CLI)."""
    total = 0
    for partition in range(engine.settings.partitions):
        total += await drain_stream(engine, redis, pool, partition, consumer=consumer)
    return total
