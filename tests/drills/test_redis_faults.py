"""Fault drills on a private Redis: what the client was told stays true.

3. Redis (AOF, appendfsync always) is SIGKILLed under a load of holds and
   confirms made through the API, then started again on its data: every hold
   answered 201 and every confirm answered 200 is still in Redis and, once the
   stream is drained, in PostgreSQL; the counters add up.
4. Redis is flushed: commands fail closed (503 state-unavailable, nothing sold
   from an empty counter) until the sync service rebuilds every partition from
   PostgreSQL by itself; afterwards state, counters and idempotent replays are
   what they were.

Both end with `reconcile` finding no drift.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest

from engine import Engine, Slot
from sync.drain import GROUP, drain_all, ensure_group, sync_lag_ms
from sync.reconcile import reconcile
from sync.service import SyncService

from ..api.conftest import Harness
from .conftest import DrillFactory, RedisFactory

pytestmark = pytest.mark.timeout(60)

PROBLEM_JSON = "application/problem+json"
LOAD_WORKERS = 8
KILL_AFTER_HOLDS = 150  # acknowledged holds before the SIGKILL
OUTAGE_S = 0.5  # the load keeps going this long against the dead server
REBUILD_S = 10.0


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


async def _create_slots(h: Harness, admin: dict[str, Any], spec: dict[int, int]) -> list[int]:
    for slot_id, capacity in spec.items():
        r = await h.client.post(
            "/slots",
            json={"slot_id": slot_id, "capacity": capacity, "label": f"drill {slot_id}"},
            headers=admin["headers"],
        )
        assert r.status_code == 201, r.text
    return list(spec)


async def _drain_until_caught_up(engine: Engine, redis: Any, pool: Any) -> None:
    await drain_all(engine, redis, pool)
    assert await sync_lag_ms(engine, redis) == 0


async def _pg_holds(pool: Any, hold_ids: list[str] | None = None) -> dict[str, Any]:
    if hold_ids is None:
        rows = await pool.fetch("SELECT hold_id, slot_id, quantity, status, version FROM holds")
    else:
        rows = await pool.fetch(
            "SELECT hold_id, slot_id, quantity, status, version FROM holds"
            " WHERE hold_id = ANY($1::text[])",
            hold_ids,
        )
    return {r["hold_id"]: r for r in rows}


async def _assert_counters(engine: Engine, pool: Any) -> list[Slot]:
    """capacity = remaining + held + confirmed, and held/confirmed are what the
    holds of Redis and of PostgreSQL add up to, for every slot."""
    slots = await engine.availability()
    in_redis: dict[int, Counter[str]] = defaultdict(Counter)
    for partition in range(engine.settings.partitions):
        for hold in await engine.partition_holds(partition):
            in_redis[hold.slot_id][hold.status] += hold.quantity
    in_pg: dict[int, Counter[str]] = defaultdict(Counter)
    for row in (await _pg_holds(pool)).values():
        in_pg[row["slot_id"]][row["status"]] += row["quantity"]
    for slot in slots:
        assert slot.remaining >= 0, slot
        assert slot.capacity == slot.remaining + slot.held + slot.confirmed, slot
        for source in (in_redis, in_pg):
            assert (slot.held, slot.confirmed) == (
                source[slot.slot_id]["held"],
                source[slot.slot_id]["confirmed"],
            ), (slot, dict(source[slot.slot_id]))
    return slots


async def _assert_no_drift(engine: Engine, redis: Any, pool: Any) -> None:
    drifts = await reconcile(engine, redis, pool)
    assert [(d.partition, d.problems) for d in drifts] == []


# -- 3. SIGKILL under load -----------------------------------------------------


@dataclass
class ClientLog:
    """What the clients were told: only successes count as promises."""

    held: dict[str, int] = field(default_factory=dict)  # hold id -> quantity, answered 201
    confirmed: set[str] = field(default_factory=set)  # answered 200
    killed_at: float | None = None
    # (operation, status) of refusals, for requests sent before / after the kill
    refused_before: Counter[tuple[str, int]] = field(default_factory=Counter)
    refused_after: Counter[tuple[str, int]] = field(default_factory=Counter)
    problem_types_after: Counter[str] = field(default_factory=Counter)

    def refused(self, op: str, sent_at: float, r: httpx.Response) -> None:
        if self.killed_at is None or sent_at < self.killed_at:
            self.refused_before[(op, r.status_code)] += 1
        else:
            self.refused_after[(op, r.status_code)] += 1
            if r.headers.get("content-type", "").startswith(PROBLEM_JSON):
                self.problem_types_after[r.json()["type"]] += 1


async def _client(
    h: Harness,
    headers: dict[str, str],
    slots: list[int],
    log: ClientLog,
    stop: asyncio.Event,
    rng: random.Random,
) -> None:
    """One client: holds on random slots, confirms about a third of what it got."""
    mine: list[str] = []
    while not stop.is_set():
        sent_at = time.monotonic()
        if mine and rng.random() < 0.35:
            hold_id = mine.pop(rng.randrange(len(mine)))
            r = await h.client.post(f"/holds/{hold_id}/confirm", headers=headers)
            if r.status_code == 200:
                assert r.json()["status"] == "confirmed"
                log.confirmed.add(hold_id)
                continue
            log.refused("confirm", sent_at, r)
        else:
            quantity = rng.randint(1, 3)
            r = await h.client.post(
                f"/slots/{rng.choice(slots)}/hold",
                json={"quantity": quantity},
                headers={**headers, **_key()},
            )
            if r.status_code == 201:
                body = r.json()
                assert body["status"] == "held" and body["quantity"] == quantity
                log.held[body["hold_id"]] = quantity
                mine.append(body["hold_id"])
                continue
            log.refused("hold", sent_at, r)
        await asyncio.sleep(0.005)  # refused (sold out, or Redis is down): back off a bit


LOST_READER = "drill-lost-reader"


async def _read_and_die(engine: Engine, redis: Any, timeout_s: float = 5.0) -> int:
    """Read entries as a worker would, never acknowledge them: they stay pending."""
    deadline = time.monotonic() + timeout_s
    read = 0
    while not read:
        assert time.monotonic() < deadline, "no new events to read"
        for partition in range(engine.settings.partitions):
            stream = engine.keys.events(partition)
            await ensure_group(redis, stream)
            reply = await redis.xreadgroup(GROUP, LOST_READER, {stream: ">"}, count=20)
            read += sum(len(items) for _, items in reply or [])
        await asyncio.sleep(0.01)
    return read


async def _pending_of(engine: Engine, redis: Any, consumer: str) -> int:
    pending = 0
    for partition in range(engine.settings.partitions):
        pending += len(
            await redis.xpending_range(
                engine.keys.events(partition), GROUP, "-", "+", 10_000, consumername=consumer
            )
        )
    return pending


async def _wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_acknowledged_holds_and_confirms_survive_sigkill(
    make_redis: RedisFactory, make_drill_harness: DrillFactory
) -> None:
    # The last value of a repeated option wins; these are the documented settings.
    server = make_redis("--appendonly", "yes", "--appendfsync", "always")
    h = await make_drill_harness(server)
    ctx = h.ctx
    config = {
        **await ctx.redis.config_get("appendonly"),
        **await ctx.redis.config_get("appendfsync"),
    }
    assert config == {"appendonly": "yes", "appendfsync": "always"}

    admin = await h.user(admin=True)
    # Slots 1..4 spread over the four partitions; slot 5 sells out under the load.
    slots = await _create_slots(h, admin, {1: 2_000, 2: 2_000, 3: 2_000, 4: 2_000, 5: 12})
    users = [await h.user() for _ in range(4)]

    # The worker drains while the load runs: the kill finds some events written
    # to PostgreSQL and some not.
    service = SyncService(ctx.engine, ctx.redis, ctx.pool, consumer="drill-worker")
    service.start(periodic=False)

    log = ClientLog()
    stop = asyncio.Event()
    clients = [
        asyncio.create_task(
            _client(h, users[n % len(users)]["headers"], slots, log, stop, random.Random(n))
        )
        for n in range(LOAD_WORKERS)
    ]
    try:

        async def enough_holds() -> bool:
            return len(log.held) >= KILL_AFTER_HOLDS

        await _wait_for(enough_holds, 20, f"{KILL_AFTER_HOLDS} acknowledged holds")
        # A second worker read a batch and died with Redis, before its XACK.
        lost = await _read_and_die(ctx.engine, ctx.redis)
        await asyncio.to_thread(server.kill)
        log.killed_at = time.monotonic()
        await asyncio.sleep(OUTAGE_S)
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert log.confirmed, "the load confirmed nothing"
    assert sum(log.refused_after.values()) > 0, "no request reached the dead server"
    # Redis unreachable is a 503 problem, for every route the load used.
    assert {status for _, status in log.refused_after} == {503}, log.refused_after
    assert set(log.problem_types_after) == {"/problems/backend-unavailable"}, (
        log.problem_types_after
    )

    await asyncio.to_thread(server.start)  # replays the AOF
    # The epoch markers came back with the data: nothing needs a rebuild.
    assert await ctx.engine.unavailable_partitions() == []
    # So did the consumer group: what the dead worker read is still pending (the
    # running worker would claim it after claim_idle_ms; the drain claims it now).
    assert await _pending_of(ctx.engine, ctx.redis, LOST_READER) == lost
    await service.stop()
    await _drain_until_caught_up(ctx.engine, ctx.redis, ctx.pool)
    assert await _pending_of(ctx.engine, ctx.redis, LOST_READER) == 0

    # Every promise made to a client holds, in Redis and in PostgreSQL.
    for hold_id, quantity in log.held.items():
        hold = await ctx.engine.get_hold(hold_id)
        assert hold.quantity == quantity
        # 'confirmed' without a logged 200 is fine: the answer may have died with Redis.
        assert hold.status in ("held", "confirmed"), hold
        if hold_id in log.confirmed:
            assert hold.status == "confirmed", hold
    pg = await _pg_holds(ctx.pool, list(log.held))
    assert set(pg) == set(log.held)
    for hold_id, row in pg.items():
        hold = await ctx.engine.get_hold(hold_id)
        assert (row["status"], row["version"]) == (hold.status, hold.version), hold_id
    assert all(pg[hold_id]["status"] == "confirmed" for hold_id in log.confirmed)
    await _assert_counters(ctx.engine, ctx.pool)

    # The service answers again after the restart, and what it answers is right.
    user = users[0]["headers"]
    r = await h.client.post("/slots/1/hold", headers={**user, **_key()})
    assert r.status_code == 201, r.text
    r = await h.client.post(f"/holds/{r.json()['hold_id']}/confirm", headers=user)
    assert r.status_code == 200, r.text
    await _drain_until_caught_up(ctx.engine, ctx.redis, ctx.pool)
    await _assert_counters(ctx.engine, ctx.pool)
    await _assert_no_drift(ctx.engine, ctx.redis, ctx.pool)


# -- 4. FLUSHALL ---------------------------------------------------------------


@dataclass
class Booked:
    """A hold made before the flush, and how to replay it."""

    hold_id: str
    slot_id: int
    quantity: int
    key: str
    headers: dict[str, str]


async def _book(
    h: Harness, headers: dict[str, str], slot_id: int, quantity: int, *then: str
) -> Booked:
    key = uuid.uuid4().hex
    r = await h.client.post(
        f"/slots/{slot_id}/hold",
        json={"quantity": quantity},
        headers={**headers, "Idempotency-Key": key},
    )
    assert r.status_code == 201, r.text
    hold_id = r.json()["hold_id"]
    for step in then:
        if step == "confirm":
            r = await h.client.post(f"/holds/{hold_id}/confirm", headers=headers)
        else:
            r = await h.client.delete(f"/holds/{hold_id}", headers=headers)
        assert r.status_code == 200, r.text
    return Booked(hold_id, slot_id, quantity, key, headers)


def _assert_state_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    assert r.json()["type"].endswith("state-unavailable"), r.json()
    assert r.headers["retry-after"] == "1"


def _instant(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _comparable(slot: Slot) -> tuple[Any, ...]:
    # starts_at comes back from PostgreSQL as the same instant, maybe spelt in UTC.
    return (
        slot.slot_id,
        slot.capacity,
        slot.remaining,
        slot.held,
        slot.confirmed,
        slot.state,
        slot.label,
        _instant(slot.starts_at),
        _instant(slot.ends_at),
    )


async def test_flushed_redis_fails_closed_and_is_rebuilt_from_postgres(
    make_redis: RedisFactory, make_drill_harness: DrillFactory
) -> None:
    server = make_redis()
    h = await make_drill_harness(server)
    ctx = h.ctx
    engine, redis, pool = ctx.engine, ctx.redis, ctx.pool
    admin = await h.user(admin=True)
    await _create_slots(h, admin, {1: 10, 2: 10, 3: 10, 4: 10})
    # Slot 5 (partition 1) sells out: an empty counter would sell it again.
    r = await h.client.post(
        "/slots",
        json={
            "slot_id": 5,
            "capacity": 3,
            "label": "sold out",
            "starts_at": "2030-01-01T09:00:00+02:00",
            "ends_at": "2030-01-01T10:00:00+02:00",
        },
        headers=admin["headers"],
    )
    assert r.status_code == 201, r.text
    a, b = (await h.user())["headers"], (await h.user())["headers"]

    booked = {
        "held": await _book(h, a, 1, 2),
        "confirmed": await _book(h, a, 2, 3, "confirm"),
        "cancelled": await _book(h, b, 1, 1, "cancel"),
        "booking cancelled": await _book(h, b, 3, 1, "confirm", "cancel"),
        "sold out": await _book(h, b, 5, 3),
        "held elsewhere": await _book(h, b, 4, 1),
    }
    await _drain_until_caught_up(engine, redis, pool)
    before_holds = {role: await engine.get_hold(x.hold_id) for role, x in booked.items()}
    assert [x.status for x in before_holds.values()] == [
        "held",
        "confirmed",
        "cancelled",
        "cancelled",
        "held",
        "held",
    ]
    before_slots = await _assert_counters(engine, pool)
    pg_before = await _pg_holds(pool)

    await redis.flushall()  # the private server only
    partitions = list(range(engine.settings.partitions))
    assert await engine.unavailable_partitions() == partitions

    # Fail closed: every command on every partition refuses, and changes nothing.
    held, confirmed = booked["held"], booked["confirmed"]
    refused = [
        h.client.post("/slots/1/hold", headers={**b, **_key()}),
        h.client.post(
            "/slots/1/hold",
            json={"quantity": held.quantity},
            headers={**held.headers, "Idempotency-Key": held.key},
        ),
        h.client.post(f"/holds/{held.hold_id}/confirm", headers=held.headers),
        h.client.post(f"/holds/{confirmed.hold_id}/confirm", headers=confirmed.headers),
        h.client.delete(f"/holds/{held.hold_id}", headers=held.headers),
        h.client.get(f"/holds/{held.hold_id}", headers=held.headers),
        h.client.get("/slots/1", headers=a),
        h.client.patch("/slots/1", json={"capacity": 20}, headers=admin["headers"]),
        h.client.post("/slots", json={"slot_id": 9, "capacity": 5}, headers=admin["headers"]),
        # A burst on the sold-out slot: from an empty counter this would sell.
        *[h.client.post("/slots/5/hold", headers={**u, **_key()}) for u in (a, b) * 10],
    ]
    for r in await asyncio.gather(*refused):
        _assert_state_unavailable(r)
    leftovers = [
        key
        for p in partitions
        for key in engine.keys.partition(p)
        if await redis.exists(key)  # events included: no event was emitted either
    ]
    assert leftovers == []
    assert await _pg_holds(pool) == pg_before
    assert await pool.fetchval("SELECT count(*) FROM slots WHERE slot_id = 9") == 0

    # The sync service notices and rebuilds every partition from PostgreSQL.
    service = SyncService(engine, redis, pool, consumer="drill-worker")
    service.start()
    try:

        async def rebuilt() -> bool:
            return await engine.unavailable_partitions() == []

        await _wait_for(rebuilt, REBUILD_S, "the sync service to rebuild every partition")
    finally:
        await service.stop()

    # State is what it was: holds (versions included), counters, availability.
    for role, x in booked.items():
        hold = await engine.get_hold(x.hold_id)
        assert hold == before_holds[role], role
        assert pg_before[x.hold_id]["status"] == hold.status
    after_slots = await _assert_counters(engine, pool)
    assert [_comparable(s) for s in after_slots] == [_comparable(s) for s in before_slots]

    async def api_availability_is_back() -> bool:
        r = await h.client.get("/slots/availability", headers=a)
        return r.status_code == 200 and [
            (s["slot_id"], s["capacity"], s["remaining"]) for s in r.json()
        ] == [(s.slot_id, s.capacity, s.remaining) for s in before_slots]

    await _wait_for(api_availability_is_back, 2, "GET /slots/availability to match")

    # A key used before the flush replays the same hold, in its current state.
    for role, x in booked.items():
        r = await h.client.post(
            f"/slots/{x.slot_id}/hold",
            json={"quantity": x.quantity},
            headers={**x.headers, "Idempotency-Key": x.key},
        )
        assert r.status_code == 201, (role, r.text)
        assert r.headers.get("idempotent-replayed") == "true", role
        assert (r.json()["hold_id"], r.json()["status"]) == (x.hold_id, before_holds[role].status)
    r = await h.client.post(
        "/slots/1/hold",
        json={"quantity": held.quantity + 1},
        headers={**held.headers, "Idempotency-Key": held.key},
    )
    assert r.status_code == 422, r.text
    assert await _pg_holds(pool) == pg_before  # no second hold was made

    # The sold-out slot is still sold out; the rest works again.
    r = await h.client.post("/slots/5/hold", headers={**a, **_key()})
    assert r.status_code == 409, r.text
    assert r.json()["remaining"] == 0
    r = await h.client.post(f"/holds/{held.hold_id}/confirm", headers=held.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "confirmed"
    r = await h.client.post("/slots/1/hold", headers={**b, **_key()})
    assert r.status_code == 201, r.text

    await _drain_until_caught_up(engine, redis, pool)
    await _assert_counters(engine, pool)
    await _assert_no_drift(engine, redis, pool)
