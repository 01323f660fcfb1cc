"""Hold groups under load, on the real Redis and the private cluster: 200 groups of
3 items at once over 5 small slots give no partial group and no oversell, and
every unit comes back after cancels and expiry."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from engine import Engine, EngineSettings, GroupItem, GroupOutcome, GroupRefused, Hold

from ..conftest import _drop_prefix, redis_url

T0 = 1_900_000_000_000
TTL_MS = 300_000
CAPS = {1: 6, 2: 4, 3: 5, 4: 3, 5: 7}  # ids over all 4 partitions, so all 3 nodes
R = TypeVar("R")


@pytest.fixture(params=["redis", "cluster"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Engine, Any]]:
    prefix = f"tg{uuid.uuid4().hex[:10]}:"
    if request.param == "redis":
        pool = aioredis.BlockingConnectionPool.from_url(redis_url(), max_connections=48, timeout=30)
        client: Any = aioredis.Redis.from_pool(pool)
    else:
        ports = request.getfixturevalue("cluster_ports")
        client = RedisCluster(host="127.0.0.1", port=ports[0], max_connections=256)
    e = Engine(client, EngineSettings(partitions=4, key_prefix=prefix, group_pending_ms=5000))
    for p in range(4):
        await e.load_partition(p, [], [], epoch="test")
    for slot_id, cap in CAPS.items():
        await e.create_slot(slot_id, cap, now_ms=T0)
    yield e, client
    if request.param == "redis":
        await _drop_prefix(client, prefix)
    await client.aclose()


async def _all_holds(e: Engine) -> list[Hold]:
    return [h for p in range(4) for h in await e.partition_holds(p)]


async def _check(e: Engine, winners: list[GroupOutcome], status: str) -> None:
    """Every won group's members are all in ``status``; no other hold is live; the
    slots' counters match the groups exactly."""
    members = {h.hold_id for w in winners for h in w.group.holds}
    live = [h for h in await _all_holds(e) if h.status in ("held", "confirmed")]
    assert {h.hold_id for h in live} == (members if status in ("held", "confirmed") else set())
    assert {h.status for h in live} <= {status}
    want: Counter[int] = Counter()
    for w in winners:
        for h in w.group.holds:
            want[h.slot_id] += h.quantity
    for slot_id, cap in CAPS.items():
        s = await e.slot(slot_id)
        assert s.capacity == cap == s.remaining + s.held + s.confirmed
        taken = s.held if status == "held" else s.confirmed
        assert taken == (want[slot_id] if status in ("held", "confirmed") else 0)
        assert s.remaining >= 0


async def test_200_groups_of_3_over_5_slots(engine: tuple[Engine, Any]) -> None:
    e, _ = engine
    rng = random.Random(13)
    requests = [
        [GroupItem(s, rng.choice((1, 1, 2))) for s in rng.sample(sorted(CAPS), 3)]
        for _ in range(200)
    ]
    gate = asyncio.Semaphore(64)

    async def gated(call: Awaitable[R]) -> R:
        async with gate:
            return await call

    results = await asyncio.gather(
        *(
            gated(e.groups.hold(f"u{n}", f"k{n}", items, now_ms=T0))
            for n, items in enumerate(requests)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, GroupOutcome)]
    refused = [r for r in results if isinstance(r, GroupRefused)]
    assert len(winners) + len(refused) == 200, Counter(type(r).__name__ for r in results)
    assert winners and refused
    for w in winners:
        assert w.group.status == "held" and len(w.group.holds) == 3
        assert {h.expires_at_ms for h in w.group.holds} == {w.group.expires_at_ms}
    await _check(e, winners, "held")

    # Half confirmed, half cancelled, at once; then the confirmed ones cancelled too.
    halves = winners[::2], winners[1::2]
    await asyncio.gather(
        *(e.groups.confirm(w.group.group_id, None, now_ms=T0 + 1) for w in halves[0]),
        *(e.groups.cancel(w.group.group_id, None, now_ms=T0 + 1) for w in halves[1]),
    )
    confirmed = [await e.groups.get(w.group.group_id, None, now_ms=T0 + 2) for w in halves[0]]
    assert {g.status for g in confirmed} <= {"confirmed"}
    await _check(e, [GroupOutcome(g, True) for g in confirmed], "confirmed")
    await asyncio.gather(*(e.groups.cancel(g.group_id, None, now_ms=T0 + 3) for g in confirmed))
    await _check(e, [], "cancelled")
    for slot_id, cap in CAPS.items():
        assert (await e.slot(slot_id)).remaining == cap


async def test_groups_expire_to_the_last_unit(engine: tuple[Engine, Any]) -> None:
    e, _ = engine
    rng = random.Random(7)
    results = await asyncio.gather(
        *(
            e.groups.hold(
                f"u{n}", f"k{n}", [GroupItem(s) for s in rng.sample(sorted(CAPS), 3)], now_ms=T0
            )
            for n in range(60)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, GroupOutcome)]
    assert winners and all(isinstance(r, GroupOutcome | GroupRefused) for r in results)
    await _check(e, winners, "held")
    for p in range(4):
        more = True
        while more:
            _, more = await e.sweep(p, now_ms=T0 + TTL_MS)
    await _check(e, [], "expired")
    for w in winners:
        assert (await e.groups.get(w.group.group_id, None, now_ms=T0 + TTL_MS)).status == "expired"


async def test_concurrent_copies_make_one_group(engine: tuple[Engine, Any]) -> None:
    e, _ = engine
    items = [GroupItem(1), GroupItem(2, 2), GroupItem(3)]
    results = await asyncio.gather(
        *(e.groups.hold("u", "same", items, now_ms=T0) for _ in range(20))
    )
    assert len({r.group.group_id for r in results}) == 1
    assert sum(r.changed for r in results) == 1
    assert all(r.group.status == "held" and len(r.group.holds) == 3 for r in results)
    assert [(await e.slot(s)).held for s in (1, 2, 3)] == [1, 2, 1]
