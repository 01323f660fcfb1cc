"""Fault drills: the sync promises under a killed worker, a PostgreSQL outage, two
workers at once, and expiry with nobody touching the slot.

Every drill runs on a private Redis (and the outage drill on a private PostgreSQL)
that the test starts and stops by PID; the shared servers are never touched
beyond a fresh database.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from engine import Engine, HoldExpired
from sync.db import migrate
from sync.drain import sync_lag_ms
from sync.service import SyncService

from ..api.conftest import Harness, HarnessFactory, make_settings
from .conftest import SyncEnvFactory
from .helpers import (
    assert_postgres_matches_redis,
    cli_env,
    entries_added,
    gather_in_chunks,
    hold_many,
    make_slots,
    make_users,
    pending_count,
    start_worker,
    wait_until,
)
from .pgserver import PostgresServer

# -- 1. kill -9 a worker in the middle of 10,000 events ------------------------------

HOLD_EVENTS = 10_000


async def test_worker_killed_mid_sync_loses_nothing_and_duplicates_nothing(
    private_redis_url: str, make_env: SyncEnvFactory, tmp_path: Path
) -> None:
    env = await make_env(redis_url=private_redis_url, max_held_per_user_slot=1000)
    engine, pool = env.engine, env.pool
    users = await make_users(pool, 5)
    slots = list(range(1, 21))
    await make_slots(engine, pool, slots, capacity=1000)
    holds = await hold_many(engine, slots, users, HOLD_EVENTS // 2)
    await gather_in_chunks([lambda h=h: engine.confirm(h.hold_id, h.user_id) for h in holds])

    async def written() -> int:
        return int(await pool.fetchval("SELECT count(*) FROM hold_events"))

    worker_env = cli_env(env.settings, tmp_path, SLOTKEEPER_SYNC_CLAIM_IDLE_MS="500")
    first = await start_worker(worker_env, tmp_path / "worker-1.log")
    try:

        async def mid_batch() -> bool:
            # A good part committed, and a batch read but not yet acknowledged.
            return await written() >= HOLD_EVENTS // 4 and bool(
                await pending_count(engine, env.redis)
            )

        await wait_until(mid_batch, timeout_s=60, interval_s=0.002)
        first.kill()  # SIGKILL: no cleanup, no XACK of the batch in flight
        await first.wait()
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    at_kill = await written()
    orphaned = sum((await pending_count(engine, env.redis)).values())
    assert 0 < at_kill < HOLD_EVENTS, f"killed too late: {at_kill} written"
    assert orphaned > 0  # the dead worker's batch in flight: only a claim can save it

    second = await start_worker(worker_env, tmp_path / "worker-2.log")
    try:

        async def caught_up() -> bool:
            return await sync_lag_ms(engine, env.redis) == 0 and await written() >= HOLD_EVENTS

        await wait_until(caught_up, timeout_s=60, interval_s=0.1)
    finally:
        second.terminate()
        await second.wait()

    assert await assert_postgres_matches_redis(engine, pool) == HOLD_EVENTS
    statuses = await pool.fetch("SELECT status, count(*) FROM holds GROUP BY status")
    assert dict(statuses) == {"confirmed": HOLD_EVENTS // 2}
    assert await pending_count(engine, env.redis) == {}
    print(f"killed at {at_kill}/{HOLD_EVENTS} written, {orphaned} entries left pending")


# -- 2. PostgreSQL down for 10 s: holds continue, confirms wait for it (503, retried) --

OUTAGE_S = 10.0


@asynccontextmanager
async def _api(settings: Any) -> AsyncIterator[Harness]:
    """The app in-process (as tests/api does), on whatever servers ``settings`` name."""
    api = await Harness.build(settings)
    try:
        yield api
    finally:
        await api.close(drop_keys=False)


async def test_postgres_outage_blocks_no_hold_and_loses_nothing(
    private_postgres: PostgresServer, private_redis_url: str
) -> None:
    pg = private_postgres
    await migrate(pg.dsn)
    settings = make_settings(
        pg.dsn, redis_url=private_redis_url, hold_rate_per_minute=0, max_held_per_user_slot=1000
    )
    async with _api(settings) as api:
        users = [await api.user() for _ in range(4)]
        slots = [await api.slot(capacity=1_000_000) for _ in range(4)]
        # The worker exactly as production builds it (default claim idle and batch).
        service = SyncService(api.ctx.engine, api.ctx.redis, api.ctx.pool)
        service.start()
        failures: list[str] = []
        made: dict[str, str] = {}
        to_retry: list[tuple[dict[str, Any], str]] = []
        phase = {"name": "before"}
        per_phase: dict[str, int] = {}
        stop = asyncio.Event()

        async def customer(n: int) -> None:
            user = users[n % len(users)]
            i = 0
            while not stop.is_set():
                i += 1
                key = {**user["headers"], "Idempotency-Key": f"c{n}-{i}"}
                r = await api.client.post(f"/slots/{slots[i % len(slots)]}/hold", headers=key)
                if r.status_code != 201:
                    failures.append(f"hold {r.status_code} {r.text}")
                    continue
                hold_id = r.json()["hold_id"]
                made[hold_id] = "held"
                per_phase[phase["name"]] = per_phase.get(phase["name"], 0) + 1
                if i % 3:
                    r = await api.client.post(f"/holds/{hold_id}/confirm", headers=user["headers"])
                    if r.status_code == 503 and phase["name"] != "before":
                        # Not durable yet: PostgreSQL is down. Retried after the outage.
                        assert r.headers["Retry-After"] == "1"
                        to_retry.append((user, hold_id))
                        continue
                    if r.status_code != 200:
                        failures.append(f"confirm {r.status_code} {r.text}")
                        continue
                    made[hold_id] = "confirmed"

        customers = [asyncio.create_task(customer(n)) for n in range(4)]
        try:
            await asyncio.sleep(1.0)
            phase["name"] = "outage"
            await asyncio.to_thread(pg.stop)
            lags = []
            started = time.monotonic()
            while time.monotonic() - started < OUTAGE_S:
                await asyncio.sleep(0.5)
                lags.append(await sync_lag_ms(api.ctx.engine, api.ctx.redis))
            await asyncio.to_thread(pg.start)
            phase["name"] = "after"
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await asyncio.gather(*customers)
        # A confirm answered 503 is completed by its retry (idempotent).
        for user, hold_id in to_retry:
            for _ in range(20):  # the pool may still hand out a connection cut by the outage
                r = await api.client.post(f"/holds/{hold_id}/confirm", headers=user["headers"])
                if r.status_code != 503:
                    break
                await asyncio.sleep(0.1)
            if r.status_code != 200:
                failures.append(f"confirm retry {r.status_code} {r.text}")
            made[hold_id] = "confirmed"

        try:

            async def explain() -> str:
                pending = await pending_count(api.ctx.engine, api.ctx.redis)
                lag = await sync_lag_ms(api.ctx.engine, api.ctx.redis)
                return f"(lag {lag} ms; unacknowledged by consumer {pending})"

            converged_s = await wait_until(
                lambda: _lag_is_zero(api.ctx.engine, api.ctx.redis),
                timeout_s=10,
                interval_s=0.1,
                explain=explain,
            )
        finally:
            await service.stop()

        assert failures == []
        assert per_phase.get("outage", 0) > 100, per_phase
        assert len(to_retry) > 50, len(to_retry)  # confirms refused while PostgreSQL was down
        assert lags[-1] >= (OUTAGE_S - 1.5) * 1000 and lags[-1] > lags[0], lags
        print(
            f"holds by phase {per_phase}; {len(to_retry)} confirms retried after the outage;"
            f" converged {converged_s:.1f} s after the load stopped"
        )
        rows = await api.ctx.pool.fetch(
            "SELECT hold_id, status FROM holds WHERE hold_id = ANY($1::text[])", list(made)
        )
        assert dict(rows) == made  # every hold and confirm the API answered is on record
        await assert_postgres_matches_redis(api.ctx.engine, api.ctx.pool)


async def _lag_is_zero(engine: Engine, redis: Any) -> bool:
    return await sync_lag_ms(engine, redis) == 0


# -- 5. two workers at once ----------------------------------------------------------------


def _record_sweeps(engine: Engine, name: str, log: list[tuple[str, float, float]]) -> None:
    """Wrap ``engine.sweep`` to log each call's interval, slowed a little so that an
    unguarded overlap could not slip between two calls."""
    real = engine.sweep

    async def sweep(partition: int, *, now_ms: int | None = None) -> tuple[int, int]:
        start = time.monotonic()
        try:
            await asyncio.sleep(0.005)
            return await real(partition, now_ms=now_ms)
        finally:
            log.append((name, start, time.monotonic()))

    engine.sweep = sweep  # type: ignore[method-assign]


async def test_two_workers_apply_each_event_once_and_never_sweep_together(
    private_redis_url: str, make_env: SyncEnvFactory
) -> None:
    env = await make_env(redis_url=private_redis_url, hold_ttl_s=1, max_held_per_user_slot=1000)
    engine, pool = env.engine, env.pool
    users = await make_users(pool, 4)
    slots = list(range(1, 9))
    await make_slots(engine, pool, slots, capacity=100_000)

    sweeps: list[tuple[str, float, float]] = []
    services: list[SyncService] = []
    clients = []
    for name in ("a", "b"):
        client = aioredis.Redis.from_url(private_redis_url, max_connections=64)
        clients.append(client)
        worker_engine = Engine(client, env.settings.engine_settings())
        _record_sweeps(worker_engine, name, sweeps)
        # claim_idle_ms=0: each steals the other's batch in flight, so the same
        # entries really are applied by both, over and over.
        service = SyncService(worker_engine, client, pool, consumer=name, batch=50, claim_idle_ms=0)
        service.start()
        services.append(service)

    rng = random.Random(5)
    stop = asyncio.Event()
    contested = {"skipped": 0}

    async def customer(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            user = users[n % len(users)]
            hold = (await engine.hold(rng.choice(slots), user, f"c{n}-{i}")).hold
            roll = rng.random()
            try:
                if roll < 0.5:
                    await engine.confirm(hold.hold_id, user)
                if roll < 0.2:
                    await engine.cancel(hold.hold_id, user)
            except HoldExpired:
                pass
            # The rest are left to expire: the sweeps have work.

    async def sweep_storm() -> None:
        # Both workers asked to sweep at the same instant, again and again, each
        # going first in turn.
        turn = 0
        while not stop.is_set():
            turn += 1
            first, second = services[turn % 2], services[1 - turn % 2]
            results = await asyncio.gather(first.sweep(), second.sweep())
            contested["skipped"] += results.count(None)
            await asyncio.sleep(0.02)

    tasks = [asyncio.create_task(customer(n)) for n in range(8)]
    tasks.append(asyncio.create_task(sweep_storm()))
    try:
        await asyncio.sleep(4.0)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    try:
        # Everything left held expires (1 s) and is swept; then the streams drain.
        async def settled() -> bool:
            counts = await pool.fetchrow(
                "SELECT count(*) FILTER (WHERE status = 'held') AS held, count(*) AS n FROM holds"
            )
            return (
                counts["held"] == 0
                and counts["n"] > 0
                and await sync_lag_ms(engine, env.redis) == 0
            )

        await wait_until(settled, timeout_s=20, interval_s=0.1)
    finally:
        for service in services:
            await service.stop()
        for client in clients:
            await client.aclose()

    events = await assert_postgres_matches_redis(engine, pool)
    slot_events = await pool.fetchval("SELECT count(*) FROM slot_events")
    assert await pool.fetchval("SELECT count(*) FROM sync_rejects") == 0
    # Every entry ever appended (trimmed ones included) is on record exactly once.
    assert await entries_added(engine, env.redis) == events + slot_events
    expired = await pool.fetchval("SELECT count(*) FROM hold_events WHERE status = 'expired'")
    assert expired > 0

    # Sweeps: both workers swept, they collided, and no two sweeps ever overlapped.
    assert {name for name, _, _ in sweeps} == {"a", "b"}
    assert contested["skipped"] > 0
    a = [(s, e) for name, s, e in sweeps if name == "a"]
    b = [(s, e) for name, s, e in sweeps if name == "b"]
    overlaps = [(x, y) for x in a for y in b if x[0] < y[1] and y[0] < x[1]]
    assert overlaps == [], overlaps[:3]
    print(f"{events} hold events, {len(sweeps)} sweep calls, {contested['skipped']} skipped")


# -- 6. expiry with nobody touching the slot --------------------------------------------


async def test_untouched_expired_hold_returns_capacity_within_2_s(
    private_redis_url: str, make_harness: HarnessFactory
) -> None:
    api = await make_harness(redis_url=private_redis_url, hold_ttl_s=1, with_worker=True)
    user = await api.user()
    slots = [await api.slot(capacity=2) for _ in range(4)]  # ids 1..4: one per partition
    expires: dict[int, float] = {}
    for slot_id in slots:
        headers = {**user["headers"], "Idempotency-Key": uuid.uuid4().hex}
        r = await api.client.post(f"/slots/{slot_id}/hold", json={"quantity": 2}, headers=headers)
        assert r.status_code == 201, r.text
        expires[slot_id] = datetime.fromisoformat(r.json()["expires_at"]).timestamp()
    assert [(await api.ctx.engine.slot(s)).remaining for s in slots] == [0, 0, 0, 0]

    # Only reads from here on: no command runs the partitions' housekeeping.
    back_after: dict[int, float] = {}
    listed_after: dict[int, float] = {}
    deadline = max(expires.values()) + 2.5
    while time.time() < deadline and len(listed_after) < len(slots):
        for slot_id in slots:
            if slot_id not in back_after and (await api.ctx.engine.slot(slot_id)).remaining == 2:
                back_after[slot_id] = time.time() - expires[slot_id]
        r = await api.client.get("/slots/availability", headers=user["headers"])
        now = time.time()
        for body in r.json():
            if body["slot_id"] not in listed_after and body["remaining"] == 2:
                listed_after[body["slot_id"]] = now - expires[body["slot_id"]]
        await asyncio.sleep(0.02)

    assert sorted(back_after) == slots, back_after
    assert sorted(listed_after) == slots, listed_after
    assert all(0 <= lag < 2.0 for lag in back_after.values()), back_after
    assert all(0 <= lag < 2.0 for lag in listed_after.values()), listed_after

    # And the worker carries the expiry into the durable record.
    async def recorded() -> bool:
        rows = await api.ctx.pool.fetch("SELECT status FROM holds")
        return len(rows) == 4 and {r["status"] for r in rows} == {"expired"}

    await wait_until(recorded, timeout_s=5)
