"""SPEC "Durability and sync": a confirmation is durable when it is answered, and
PostgreSQL arbitrates it. No sync worker runs here: what PostgreSQL has after the
answer was written by the confirm itself."""

from __future__ import annotations

import asyncio
from typing import Any

from engine import slot_of_hold
from sync import feed
from sync.db import create_pool
from sync.restore import restore_partition

from ..servers import free_port
from .conftest import Harness, HarnessFactory


async def _hold(h: Harness, user: dict[str, Any], slot_id: int, quantity: int = 1) -> str:
    headers = {**user["headers"], "Idempotency-Key": f"k-{slot_id}-{quantity}-{id(user)}"}
    r = await h.client.post(f"/slots/{slot_id}/hold", json={"quantity": quantity}, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["hold_id"])


async def _row(h: Harness, hold_id: str) -> Any:
    return await h.ctx.pool.fetchrow(
        "SELECT status, version, quantity FROM holds WHERE hold_id = $1", hold_id
    )


async def _confirmed_in_pg(h: Harness, slot_id: int) -> int:
    return int(await h.ctx.pool.fetchval("SELECT confirmed FROM slots WHERE slot_id = $1", slot_id))


async def test_confirm_is_in_postgres_when_answered(harness: Harness) -> None:
    h = harness
    user = await h.user()
    slot_id = await h.slot(capacity=5)
    hold_id = await _hold(h, user, slot_id, 2)
    assert await _row(h, hold_id) is None  # a hold alone stays in Redis (no worker)

    r = await h.client.post(f"/holds/{hold_id}/confirm", headers=user["headers"])
    assert r.status_code == 200, r.text
    row = await _row(h, hold_id)
    assert (row["status"], row["version"], row["quantity"]) == ("confirmed", 2, 2)
    assert await _confirmed_in_pg(h, slot_id) == 2
    # The event is on record under its stream entry, with the partition's sequence.
    stream = h.ctx.engine.keys.events(h.ctx.engine.keys.partition_of(slot_id))
    events = await h.ctx.pool.fetch(
        "SELECT stream, status, version FROM hold_events WHERE hold_id = $1", hold_id
    )
    assert [tuple(e) for e in events] == [(stream, "confirmed", 2)]
    # The feed is the drain's to write, in stream order (sync/events.py apply_entries).
    assert await h.ctx.pool.fetchval("SELECT count(*) FROM feed") == 0
    assert (
        await h.ctx.pool.fetchval("SELECT seq FROM partition_sequences WHERE stream = $1", stream)
        == 3
    )  # slot created, hold made, hold confirmed

    # Replayed: the same answer, nothing counted twice.
    r = await h.client.post(f"/holds/{hold_id}/confirm", headers=user["headers"])
    assert r.status_code == 200 and r.json()["status"] == "confirmed"
    assert await _confirmed_in_pg(h, slot_id) == 2

    # Cancelling the booking is durable too, and gives the quantity back there.
    r = await h.client.delete(f"/holds/{hold_id}", headers=user["headers"])
    assert r.status_code == 200, r.text
    row = await _row(h, hold_id)
    assert (row["status"], row["version"]) == ("cancelled", 3)
    assert await _confirmed_in_pg(h, slot_id) == 0


async def test_retry_writes_through_a_confirm_redis_already_has(harness: Harness) -> None:
    """The first write-through failed (PostgreSQL away): Redis has the confirm,
    PostgreSQL not; the client's retry is 'unchanged' in Redis and still written."""
    h = harness
    user = await h.user()
    slot_id = await h.slot(capacity=3)
    hold_id = await _hold(h, user, slot_id)
    outcome = await h.ctx.engine.confirm(hold_id, str(user["user_id"]))  # no write-through
    assert outcome.changed and await _row(h, hold_id) is None

    r = await h.client.post(f"/holds/{hold_id}/confirm", headers=user["headers"])
    assert r.status_code == 200, r.text
    assert (await _row(h, hold_id))["status"] == "confirmed"
    assert await _confirmed_in_pg(h, slot_id) == 1


async def test_postgres_refuses_a_confirm_past_capacity_and_redis_is_put_right(
    harness: Harness,
) -> None:
    """Redis lost a confirmed booking (say a failover) and sold its unit again:
    PostgreSQL, which has the booking, refuses the second confirm."""
    h = harness
    first, second = await h.user(), await h.user()
    slot_id = await h.slot(capacity=1)
    booked = await _hold(h, first, slot_id)
    r = await h.client.post(f"/holds/{booked}/confirm", headers=first["headers"])
    assert r.status_code == 200, r.text
    # Redis forgets the booking (its unit is free again there), PostgreSQL keeps it:
    # the cancel's event is dropped, as a failover to a lagging replica would.
    assert (await h.ctx.engine.cancel(booked, None)).changed
    stream = h.ctx.engine.keys.events(h.ctx.engine.keys.partition_of(slot_id))
    [(forgotten, _)] = await h.ctx.redis.xrevrange(stream, count=1)
    assert await h.ctx.redis.xdel(stream, forgotten) == 1
    assert await _confirmed_in_pg(h, slot_id) == 1

    resold = await _hold(h, second, slot_id)
    r = await h.client.post(f"/holds/{resold}/confirm", headers=second["headers"])
    assert r.status_code == 409, r.text
    assert r.json()["type"] == "/problems/capacity-exhausted"
    assert await _confirmed_in_pg(h, slot_id) == 1
    # Redis was put right: the refused hold is released, not confirmed.
    assert (await h.ctx.engine.get_hold(resold)).status == "cancelled"
    assert (await h.ctx.engine.slot(slot_id)).remaining == 1
    assert (await _row(h, resold))["status"] == "cancelled"
    assert slot_of_hold(resold) == slot_id


async def test_confirm_waits_for_postgres_and_holds_do_not(
    make_harness: HarnessFactory,
) -> None:
    """PostgreSQL unreachable: holds still 201, a confirm is 503 Retry-After and
    stays confirmed in Redis; the retry once it is back completes it."""
    h = await make_harness()
    user = await h.user()
    slot_id = await h.slot(capacity=3)
    hold_id = await _hold(h, user, slot_id)
    working = h.ctx.pool
    broken = await _unreachable_pool()
    h.ctx.pool = broken
    try:
        second = await _hold(h, user, slot_id, 2)
        r = await h.client.post(f"/holds/{hold_id}/confirm", headers=user["headers"])
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "1"
        assert r.json()["type"] == "/problems/backend-unavailable"
        assert (await h.ctx.engine.get_hold(hold_id)).status == "confirmed"
    finally:
        h.ctx.pool = working
        await broken.close()
    r = await h.client.post(f"/holds/{hold_id}/confirm", headers=user["headers"])
    assert r.status_code == 200, r.text
    assert (await _row(h, hold_id))["status"] == "confirmed"
    assert (await h.ctx.engine.get_hold(second)).status == "held"


async def _unreachable_pool() -> Any:
    return await create_pool(
        f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere", size=1, timeout_s=1
    )


async def test_a_confirm_redis_lost_before_the_drain_still_reaches_the_feed(
    harness: Harness,
) -> None:
    """The drain writes the feed in stream order; a confirm written through whose
    stream entry Redis then loses is put in the feed by the partition's rebuild."""
    h = harness
    user = await h.user()
    slot_id = await h.slot(capacity=2)
    hold_id = await _hold(h, user, slot_id)
    r = await h.client.post(f"/holds/{hold_id}/confirm", headers=user["headers"])
    assert r.status_code == 200, r.text
    assert await h.ctx.pool.fetchval("SELECT count(*) FROM feed") == 0  # the drain's job

    engine = h.ctx.engine
    partition = engine.keys.partition_of(slot_id)
    await engine.reset_partition(partition)  # Redis lost the partition and its stream
    await h.ctx.redis.delete(engine.keys.events(partition))
    assert await restore_partition(engine, h.ctx.redis, h.ctx.pool, partition) == 1

    events = await feed.read(h.ctx.pool, slot_id=slot_id)
    assert [(e.type, e.data["hold_id"]) for e in events] == [("hold.confirmed", hold_id)]
    assert events[0].data["status"] == "confirmed" and events[0].data["quantity"] == 1
    assert (await engine.get_hold(hold_id)).status == "confirmed"  # rebuilt from PostgreSQL


async def test_confirms_racing_the_drain_never_deadlock(make_harness: HarnessFactory) -> None:
    """The drain and confirms' write-throughs write the same holds and the same
    slots' confirmed counters in their own orders; each takes its partition's lock
    first (sync/events.py lock_partitions), so none is ever chosen as a deadlock
    victim (it was a 500)."""
    h = await make_harness(
        with_worker=True,
        hold_rate_per_minute=0,
        max_held_per_user_slot=1_000,
        backend_timeout_ms=10_000,
    )
    users = [await h.user() for _ in range(4)]
    slots = [await h.slot(capacity=200) for _ in range(2)]

    async def buy(n: int) -> int:
        user, slot_id = users[n % 4], slots[n % 2]
        headers = {**user["headers"], "Idempotency-Key": f"race-{n}"}
        r = await h.client.post(
            f"/slots/{slot_id}/hold", json={"quantity": 1 + n % 3}, headers=headers
        )
        assert r.status_code == 201, r.text
        hold_id = r.json()["hold_id"]
        r = await h.client.post(f"/holds/{hold_id}/confirm", headers=user["headers"])
        return r.status_code

    statuses = await asyncio.gather(*(buy(n) for n in range(120)))
    assert statuses == [200] * 120
    confirmed = sum(1 + n % 3 for n in range(120))
    assert sum([await _confirmed_in_pg(h, s) for s in slots]) == confirmed
