"""Redis memory over simulated days: slots that are over leave Redis (sync/archive.py).

Each simulated day a number of slots end (at noon); about half of each slot's
capacity is sold by a confirmed hold, the rest is held and then cancelled or left
to expire. The sweep runs every simulated hour, the drain and the archive sweep
at the end of each day, all on an explicit clock. Redis memory is measured over
the deployment's own key prefix (SCAN + MEMORY USAGE, every element counted), so
other users of the same Redis do not disturb it.

    python bench/memory_days.py                 # 30 days, 1,000 slots a day
    python bench/memory_days.py --days 5 --slots-per-day 100

Servers: SLOTKEEPER_BENCH_REDIS_URL / SLOTKEEPER_BENCH_DATABASE_URL (else the
embedded ones `slotkeeper run` uses are started).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import Engine  # noqa: E402
from sync.archive import archive_finished  # noqa: E402
from sync.drain import drain_all  # noqa: E402

__all__ = ["DaySimulation", "MemoryGrowth", "memory_growth", "prefix_bytes"]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
CAPACITY = 4  # per slot: 2 confirmed (half sold), 1 cancelled, 1 expired
START_MS = 1_893_456_000_000  # 2030-01-01T00:00Z: any fixed day works
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class MemoryGrowth:
    ratio: float  # last_bytes / day1_bytes
    day1_bytes: int  # the prefix's Redis memory after day 1
    last_bytes: int  # ... after the last day
    days: int
    slots_per_day: int
    per_day: tuple[int, ...]  # after each day
    archived_holds: int  # holds of archived slots, all still in PostgreSQL


async def prefix_bytes(redis: Any, prefix: str) -> int:
    """MEMORY USAGE (every element: SAMPLES 0) of every key under ``prefix``."""
    total = 0
    keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
    for start in range(0, len(keys), _CHUNK):
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys[start : start + _CHUNK]:
                pipe.memory_usage(key, samples=0)
            total += sum(n or 0 for n in await pipe.execute())
    return total


async def _in_chunks(calls: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(calls), _CHUNK):
        out += await asyncio.gather(*(c() for c in calls[start : start + _CHUNK]))
    return out


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


@dataclass
class DaySimulation:
    """One deployment (engine, its Redis client, its database) living through days."""

    engine: Engine
    redis: Any
    pool: Any
    user_id: str
    slots_per_day: int
    archive_after_s: int = 86_400
    start_ms: int = START_MS
    first_slot_id: int = 1
    # A catalog is published ahead: the slots of day d exist from day d - this. With
    # 1, the live set (yesterday's until archived, today's, tomorrow's) is the same
    # from day 1 on; with 0 it is smaller on day 1 only (see docs/decisions.md).
    publish_ahead_days: int = 1
    # Hold ids made, by the day their slot ends.
    holds_by_day: list[list[str]] = field(default_factory=list)

    def day_start(self, day: int) -> int:
        return self.start_ms + day * DAY_MS

    async def sweep(self, now_ms: int) -> None:
        for partition in range(self.engine.settings.partitions):
            more = True
            while more:
                _, more = await self.engine.sweep(partition, now_ms=now_ms)

    def slot_ids(self, day: int) -> range:
        first = self.first_slot_id + day * self.slots_per_day
        return range(first, first + self.slots_per_day)

    async def publish(self, day: int, now_ms: int) -> None:
        """Create the slots ending (at noon) on ``day``."""
        eng, slot_ids = self.engine, self.slot_ids(day)
        ends_ms = self.day_start(day) + 12 * HOUR_MS
        await self.pool.executemany(
            "INSERT INTO slots (slot_id, capacity, ends_at) VALUES ($1, $2, $3)",
            [(s, CAPACITY, datetime.fromtimestamp(ends_ms / 1000, UTC)) for s in slot_ids],
        )
        meta = {"ends_at": _iso(ends_ms)}
        await _in_chunks(
            [
                partial(eng.create_slot, s, CAPACITY, attributes=meta, now_ms=now_ms)
                for s in slot_ids
            ]
        )

    async def run_day(self, day: int) -> None:
        """Day ``day`` (0-based): the slots of ``publish_ahead_days`` later are
        published, today's are sold; sweeps, the drain and the archive run."""
        eng, start = self.engine, self.day_start(day)
        for later in range(0 if day == 0 else self.publish_ahead_days, self.publish_ahead_days + 1):
            await self.publish(day + later, start)
        slot_ids = self.slot_ids(day)
        held_at = start + HOUR_MS
        user, run = self.user_id, uuid.uuid4().hex[:6]
        made = await _in_chunks(
            [
                partial(eng.hold, s, user, f"{run}-{s}-{k}", q, now_ms=held_at)
                for s in slot_ids
                for k, q in (("sold", 2), ("cancel", 1), ("lapse", 1))
            ]
        )
        holds = [o.hold for o in made]
        self.holds_by_day.append([h.hold_id for h in holds])
        sold, cancelled = holds[0::3], holds[1::3]
        await _in_chunks(
            [partial(eng.confirm, h.hold_id, user, now_ms=held_at + 1000) for h in sold]
            + [partial(eng.cancel, h.hold_id, user, now_ms=held_at + 1000) for h in cancelled]
        )
        # The sweep every hour (the worker's runs every second): holds expire, and
        # finished holds are forgotten after their retention.
        for hour in range(2, 24):
            await self.sweep(start + hour * HOUR_MS)
        await drain_all(eng, self.redis, self.pool)
        await archive_finished(
            eng,
            self.redis,
            self.pool,
            after_s=self.archive_after_s,
            now_ms=start + DAY_MS - 1,
            limit=4 * self.slots_per_day,
        )
        # The worker drains all the time: the archive events too.
        await drain_all(eng, self.redis, self.pool)


async def simulate(
    sim: DaySimulation, days: int, measure: Callable[[], Awaitable[int]]
) -> list[int]:
    """Run ``days`` days; ``measure()`` after each."""
    sizes = []
    for day in range(days):
        await sim.run_day(day)
        sizes.append(await measure())
    return sizes


async def memory_growth(
    redis_url: str,
    dsn: str,
    *,
    days: int = 30,
    slots_per_day: int = 1000,
    publish_ahead_days: int = 1,
) -> MemoryGrowth:
    """Redis memory after ``days`` simulated days / after day 1, on a deployment of
    its own (key prefix and database, bench/run.py's Bench) on these servers."""
    from bench.run import Bench  # its module sets up sys.path for the bench scripts

    bench = Bench(argparse.Namespace(slots=0), redis_url, dsn, Path(tempfile.gettempdir()))
    await bench.prepare()
    redis = aioredis.Redis.from_url(redis_url, max_connections=2 * _CHUNK)
    pool = await asyncpg.create_pool(bench.dsn, min_size=1, max_size=8)
    try:
        engine = Engine(redis, bench.settings.engine_settings())
        user_id = str(await pool.fetchval("SELECT min(user_id) FROM users"))
        sim = DaySimulation(
            engine, redis, pool, user_id, slots_per_day, publish_ahead_days=publish_ahead_days
        )
        sizes = await simulate(sim, days, lambda: prefix_bytes(redis, bench.prefix))
        archived = [h for day in sim.holds_by_day[:-1] for h in day]
        kept = await pool.fetchval(
            "SELECT count(*) FROM holds h JOIN slots s USING (slot_id)"
            " WHERE h.hold_id = ANY($1::text[]) AND s.archived_at IS NOT NULL",
            archived,
        )
        if kept != len(archived):
            raise RuntimeError(f"{len(archived) - kept} archived holds are not in PostgreSQL")
        return MemoryGrowth(
            ratio=sizes[-1] / sizes[0],
            day1_bytes=sizes[0],
            last_bytes=sizes[-1],
            days=days,
            slots_per_day=slots_per_day,
            per_day=tuple(sizes),
            archived_holds=int(kept),
        )
    finally:
        await pool.close()
        await redis.aclose()
        await bench.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--slots-per-day", type=int, default=1000)
    parser.add_argument("--publish-ahead-days", type=int, default=1)
    args = parser.parse_args()
    redis_url = os.environ.get("SLOTKEEPER_BENCH_REDIS_URL", "")
    dsn = os.environ.get("SLOTKEEPER_BENCH_DATABASE_URL", "")
    started = time.perf_counter()
    from api.embedded import EmbeddedServers

    with tempfile.TemporaryDirectory(prefix="slotkeeper-memory-") as work:
        servers = EmbeddedServers(Path(work))
        with servers.running(redis=not redis_url, postgres=not dsn):
            result = asyncio.run(
                memory_growth(
                    redis_url or servers.redis_url,
                    dsn or servers.database_url,
                    days=args.days,
                    slots_per_day=args.slots_per_day,
                    publish_ahead_days=args.publish_ahead_days,
                )
            )
    print(
        f"Redis memory after {result.days} days ({result.slots_per_day} slots a day,"
        f" half sold): {result.last_bytes:,} bytes; after day 1: {result.day1_bytes:,};"
        f" ratio {result.ratio:.2f} (goal <= 1.2); {result.archived_holds:,} archived"
        f" holds, all in PostgreSQL; largest day / smallest: "
        f"{max(result.per_day) / min(result.per_day):.2f}; {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
