"""Drills: Redis loses data under load and no confirmation answered 200 is lost.

1. FLUSHALL under load, no pause (what a failover to a replica that missed the
   last writes looks like to the service).
3. Rewind: a partition's keys are written back as they were a moment earlier
   (DUMP/RESTORE: what an old AOF or RDB copy amounts to) under the running service.

Each prints its ledger and asserts lost = 0 and oversold = 0.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from sync.drain import drain_all

from ..api.conftest import Harness
from .conftest import DrillFactory, RedisFactory
from .load import Ledger, check_ledger, run_clients

pytestmark = pytest.mark.timeout(90)

SLOTS = {n: 8 for n in range(1, 21)}  # 20 slots over the four partitions, sold out often
HOLD_TTL_S = 2


async def _setup(h: Harness) -> tuple[list[int], list[dict[str, Any]]]:
    admin = await h.user(admin=True)
    for slot_id, capacity in SLOTS.items():
        r = await h.client.post(
            "/slots", json={"slot_id": slot_id, "capacity": capacity}, headers=admin["headers"]
        )
        assert r.status_code == 201, r.text
    return list(SLOTS), [await h.user() for _ in range(4)]


async def _wait_for(condition: Any, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def _settle_and_check(h: Harness, ledger: Ledger, name: str) -> None:
    """Load stopped: the service is whole again by itself, every held hold has
    expired, PostgreSQL caught up; then the ledger."""
    engine, redis, pool = h.ctx.engine, h.ctx.redis, h.ctx.pool

    async def whole() -> bool:
        return await engine.unavailable_partitions() == []

    await _wait_for(whole, 10, "every partition to be rebuilt")

    async def settled() -> bool:
        await drain_all(engine, redis, pool)
        held = await pool.fetchval("SELECT count(*) FROM holds WHERE status = 'held'")
        return held == 0 and await engine.unavailable_partitions() == []

    await _wait_for(settled, HOLD_TTL_S + 10, "held holds to expire and reach PostgreSQL")
    await check_ledger(h.client, pool, ledger)
    print(ledger.line(name))
    assert ledger.lost == [], ledger.lost[:5]
    assert ledger.oversold == [], ledger.oversold[:5]
    assert len(ledger.confirmed) > 50 and ledger.holds > 100, ledger.line(name)


async def test_flushall_under_load_loses_no_confirmation(
    make_redis: RedisFactory, make_drill_harness: DrillFactory
) -> None:
    server = make_redis("--appendonly", "yes", "--appendfsync", "always")
    h = await make_drill_harness(server, with_worker=True, hold_ttl_s=HOLD_TTL_S)
    slots, users = await _setup(h)
    ledger, stop = Ledger(), asyncio.Event()
    clients = run_clients(h.client, users, slots, ledger, stop)
    try:
        await asyncio.sleep(1.5)
        before = len(ledger.confirmed)
        await h.ctx.redis.flushall()  # the private server only; the load does not pause
        await asyncio.sleep(3.0)
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert before > 10 and len(ledger.confirmed) > before  # confirms on both sides of it
    await _settle_and_check(h, ledger, "flushall")


async def test_partition_gone_back_in_time_is_rebuilt_and_loses_no_confirmation(
    make_redis: RedisFactory, make_drill_harness: DrillFactory
) -> None:
    server = make_redis("--appendonly", "yes", "--appendfsync", "always")
    h = await make_drill_harness(server, with_worker=True, hold_ttl_s=HOLD_TTL_S)
    engine, redis = h.ctx.engine, h.ctx.redis
    slots, users = await _setup(h)
    partition = 1
    keys = engine.keys.partition(partition)
    ledger, stop = Ledger(), asyncio.Event()
    clients = run_clients(h.client, users, slots, ledger, stop)
    try:
        await asyncio.sleep(1.0)
        older = {k: await redis.dump(k) for k in keys}  # the old copy, taken now
        confirmed_then = len(ledger.confirmed)
        await asyncio.sleep(1.5)
        assert len(ledger.confirmed) > confirmed_then
        async with redis.pipeline(transaction=True) as pipe:  # written back at once
            for key, value in older.items():
                if value is not None:
                    pipe.restore(key, 0, value, replace=True)
            await pipe.execute()
        rewound_at = time.monotonic()

        async def failed_closed() -> bool:
            return partition in await engine.unavailable_partitions()

        caught_s = await _wait_for(failed_closed, 5, "the rewound partition to fail closed")
        await asyncio.sleep(2.0)
    finally:
        stop.set()
        await asyncio.gather(*clients)
    print(f"[rewind] failed closed {caught_s:.2f} s after the write-back")
    assert time.monotonic() - rewound_at > caught_s
    await _settle_and_check(h, ledger, "rewind")
