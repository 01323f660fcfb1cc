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

from ..api.conftest import Harness
from .conftest import DrillFactory, RedisFactory
from .load import HOLD_TTL_S, Ledger, run_clients, settle_and_check, wait_for

pytestmark = pytest.mark.timeout(90)

SLOTS = {n: 8 for n in range(1, 21)}  # 20 slots over the four partitions, sold out often


async def _setup(h: Harness) -> tuple[list[int], list[dict[str, Any]]]:
    admin = await h.user(admin=True)
    for slot_id, capacity in SLOTS.items():
        r = await h.client.post(
            "/slots", json={"slot_id": slot_id, "capacity": capacity}, headers=admin["headers"]
        )
        assert r.status_code == 201, r.text
    return list(SLOTS), [await h.user() for _ in range(4)]


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
        before = ledger.acknowledged
        await h.ctx.redis.flushall()  # the private server only; the load does not pause
        await asyncio.sleep(3.0)
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert before > 10 and ledger.acknowledged > before  # confirms on both sides of it
    await settle_and_check(h, ledger, "flushall")


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
        confirmed_then = ledger.acknowledged
        await asyncio.sleep(1.5)
        assert ledger.acknowledged > confirmed_then  # the copy is older than these
        async with redis.pipeline(transaction=True) as pipe:  # written back at once
            for key, value in older.items():
                if value is not None:
                    pipe.restore(key, 0, value, replace=True)
            await pipe.execute()
        rewound_at = time.monotonic()

        async def failed_closed() -> bool:
            return partition in await engine.unavailable_partitions()

        caught_s = await wait_for(failed_closed, 5, "the rewound partition to fail closed")
        await asyncio.sleep(2.0)
    finally:
        stop.set()
        await asyncio.gather(*clients)
    print(f"[rewind] failed closed {caught_s:.2f} s after the write-back")
    assert time.monotonic() - rewound_at > caught_s
    await settle_and_check(h, ledger, "rewind")
