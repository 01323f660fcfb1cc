"""Slots leave Redis when they are over (sync/archive.py), on real Redis and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bench.memory_days import DAY_MS, DaySimulation, prefix_bytes
from engine import Engine, Hold
from sync.archive import archive_finished
from sync.drain import drain_all
from sync.holds import find_hold
from sync.reconcile import check_partition, reconcile
from sync.restore import restore_partition
from sync.service import SyncService

from .conftest import SyncEnvFactory
from .helpers import SyncEnv, make_users

T0 = 1_893_456_000_000  # 2030-01-01T00:00Z: the tests' clock
HOUR = 3_600_000
ENDS = T0 + 12 * HOUR
AFTER_S = 86_400
ARCHIVE_AT = ENDS + AFTER_S * 1000 + 1


async def _slot(env: SyncEnv, slot_id: int, capacity: int = 10, ends_ms: int = ENDS) -> None:
    ends = datetime.fromtimestamp(ends_ms / 1000, UTC)
    await env.pool.execute(
        "INSERT INTO slots (slot_id, capacity, ends_at) VALUES ($1, $2, $3)",
        slot_id,
        capacity,
        ends,
    )
    await env.engine.create_slot(
        slot_id, capacity, attributes={"ends_at": ends.isoformat()}, now_ms=T0
    )


async def _booked(env: SyncEnv, slot_id: int, user: str) -> dict[str, Hold]:
    """A confirmed hold, a cancelled one and an expired one on the slot, drained."""
    eng = env.engine
    at = T0 + HOUR
    sold = (await eng.hold(slot_id, user, f"sold-{slot_id}", 2, now_ms=at)).hold
    gone = (await eng.hold(slot_id, user, f"gone-{slot_id}", 1, now_ms=at)).hold
    lapse = (await eng.hold(slot_id, user, f"lapse-{slot_id}", 1, now_ms=at)).hold
    await eng.confirm(sold.hold_id, user, now_ms=at + 1000)
    await eng.cancel(gone.hold_id, user, now_ms=at + 1000)
    await eng.sweep(eng.keys.partition_of(slot_id), now_ms=at + 3600_000)
    await drain_all(eng, env.redis, env.pool)
    return {"sold": sold, "gone": gone, "lapse": lapse}


async def _redis_knows(env: SyncEnv, slot_id: int, holds: list[Hold], user: str) -> list[str]:
    """What Redis still keeps of the slot and its holds (names, for the message)."""
    eng: Engine = env.engine
    p = eng.keys.partition_of(slot_id)
    found = []
    if await env.redis.hexists(eng.keys.slots(p), f"{slot_id}:cap"):
        found.append("slot")
    for hold in holds:
        if await env.redis.hexists(eng.keys.holds(p), hold.hold_id):
            found.append(f"hold {hold.hold_id}")
    for key in ("sold", "gone", "lapse"):
        if await env.redis.exists(eng.keys.idempotency(slot_id, user, f"{key}-{slot_id}")):
            found.append(f"idempotency record {key}")
    return found


async def _archived_at(env: SyncEnv, slot_id: int) -> Any:
    return await env.pool.fetchval("SELECT archived_at FROM slots WHERE slot_id = $1", slot_id)


async def test_archive_moves_a_finished_slot_out_of_redis(make_env: SyncEnvFactory) -> None:
    env = await make_env()
    (user,) = await make_users(env.pool, 1)
    await _slot(env, 5)
    await _slot(env, 9)  # same partition (4 partitions), not booked
    booked = await _booked(env, 5, user)
    holds = list(booked.values())
    kept = ["slot", *[f"hold {h.hold_id}" for h in holds]]
    kept += [f"idempotency record {k}" for k in ("sold", "gone", "lapse")]
    assert await _redis_knows(env, 5, holds, user) == kept
    before = {h.hold_id: await find_hold(env.engine, env.pool, h.hold_id) for h in holds}

    # Not yet: ends_at is past, but not by the delay.
    early = await archive_finished(
        env.engine, env.redis, env.pool, after_s=AFTER_S, now_ms=ARCHIVE_AT - 2
    )
    assert early.archived == 0 and await _archived_at(env, 5) is None

    stats = await archive_finished(
        env.engine, env.redis, env.pool, after_s=AFTER_S, now_ms=ARCHIVE_AT
    )
    # Finished holds are forgotten by the sweep only (lua/lib_housekeeping.lua) and no
    # sweep ran: the cancelled, expired and confirmed holds all leave with their slot.
    assert (stats.archived, stats.holds, stats.waiting) == (2, 3, 0)
    assert await _redis_knows(env, 5, holds, user) == []
    assert await _archived_at(env, 5) == datetime.fromtimestamp(ARCHIVE_AT / 1000, UTC)
    # Every hold still reads the same, now from PostgreSQL.
    for hold in holds:
        found = await find_hold(env.engine, env.pool, hold.hold_id)
        old = before[hold.hold_id]
        assert found is not None and old is not None
        assert (found.status, found.quantity, found.version) == (
            old.status,
            old.quantity,
            old.version,
        )
    assert [before[h.hold_id].status for h in holds] == ["confirmed", "cancelled", "expired"]  # type: ignore[union-attr]

    # A second round finds nothing; the drained archive event changes nothing.
    again = await archive_finished(
        env.engine, env.redis, env.pool, after_s=AFTER_S, now_ms=ARCHIVE_AT + 1
    )
    assert again.archived == 0
    await drain_all(env.engine, env.redis, env.pool)
    assert await _archived_at(env, 5) == datetime.fromtimestamp(ARCHIVE_AT / 1000, UTC)


async def test_restore_and_reconcile_leave_archived_slots_out(make_env: SyncEnvFactory) -> None:
    env = await make_env()
    (user,) = await make_users(env.pool, 1)
    await _slot(env, 5)
    await _slot(env, 13, ends_ms=ENDS + 30 * DAY_MS)  # same partition, ends much later
    booked = await _booked(env, 5, user)
    live = (await env.engine.hold(13, user, "live", 1)).hold
    await env.engine.confirm(live.hold_id, user)
    await drain_all(env.engine, env.redis, env.pool)
    await archive_finished(env.engine, env.redis, env.pool, after_s=AFTER_S, now_ms=ARCHIVE_AT)
    partition = env.engine.keys.partition_of(5)

    assert (await check_partition(env.engine, env.pool, partition)).clean
    assert await reconcile(env.engine, env.redis, env.pool) == []

    await restore_partition(env.engine, env.redis, env.pool, partition)
    assert await _redis_knows(env, 5, list(booked.values()), user) == []
    assert [s.slot_id for s in await env.engine.partition_slots(partition)] == [13]
    assert (await env.engine.get_hold(live.hold_id)).status == "confirmed"
    assert (await check_partition(env.engine, env.pool, partition)).clean


async def test_live_holds_keep_a_slot_until_they_end(make_env: SyncEnvFactory) -> None:
    env = await make_env()
    (user,) = await make_users(env.pool, 1)
    await _slot(env, 6)
    # Held a minute before the archive is due: it lives five more minutes.
    late = (await env.engine.hold(6, user, "late", 1, now_ms=ARCHIVE_AT - 60_000)).hold
    await drain_all(env.engine, env.redis, env.pool)

    busy = await archive_finished(
        env.engine, env.redis, env.pool, after_s=AFTER_S, now_ms=ARCHIVE_AT
    )
    assert (busy.archived, busy.waiting) == (0, 1)
    assert await _archived_at(env, 6) is None
    assert (await env.engine.get_hold(late.hold_id)).status == "held"

    # Once it expired (here by the archive's own housekeeping), the next round
    # archives the slot, after PostgreSQL has the expiry.
    after = ARCHIVE_AT + 10 * 60_000
    first = await archive_finished(env.engine, env.redis, env.pool, after_s=AFTER_S, now_ms=after)
    second = await archive_finished(
        env.engine, env.redis, env.pool, after_s=AFTER_S, now_ms=after + 1
    )
    assert first.archived + second.archived == 1
    hold = await find_hold(env.engine, env.pool, late.hold_id)
    assert hold is not None and hold.status == "expired"
    assert await _redis_knows(env, 6, [late], user) == []


async def test_postgres_behind_redis_keeps_the_slot(make_env: SyncEnvFactory) -> None:
    """Redis knowing more confirmed than PostgreSQL (made here by bumping Redis's
    counter, which no drain can repair) refuses the archive: nothing is lost."""
    env = await make_env()
    (user,) = await make_users(env.pool, 1)
    await _slot(env, 7)
    await _booked(env, 7, user)
    p = env.engine.keys.partition_of(7)
    # Redis says 3 confirmed, PostgreSQL 2: the archive must not trust PostgreSQL.
    await env.redis.hincrby(env.engine.keys.slots(p), "7:conf", 1)
    stats = await archive_finished(
        env.engine, env.redis, env.pool, after_s=AFTER_S, now_ms=ARCHIVE_AT
    )
    assert (stats.archived, stats.waiting) == (0, 1)
    assert await env.redis.hexists(env.engine.keys.slots(p), "7:cap")
    assert await _archived_at(env, 7) is None


async def test_memory_stays_flat_over_thirty_days(make_env: SyncEnvFactory) -> None:
    """30 simulated days, a few slots ending each day, half sold: the prefix's Redis
    memory after day 30 is within 1.2x of day 1, and every archived hold reads."""
    env = await make_env()
    (user,) = await make_users(env.pool, 1)
    sim = DaySimulation(env.engine, env.redis, env.pool, user, slots_per_day=8, first_slot_id=1000)
    sizes = []
    for day in range(30):
        await sim.run_day(day)
        sizes.append(await prefix_bytes(env.redis, env.settings.key_prefix))
    assert sizes[-1] <= 1.2 * sizes[0], sizes
    archived = await env.pool.fetchval("SELECT count(*) FROM slots WHERE archived_at IS NOT NULL")
    assert archived == 29 * 8
    for day_holds in sim.holds_by_day[:-1]:
        for hold_id in day_holds:
            hold = await find_hold(env.engine, env.pool, hold_id)
            assert hold is not None and hold.status in ("confirmed", "cancelled", "expired")
    assert sim.day_start(30) - sim.day_start(0) == 30 * DAY_MS


async def test_the_service_archives_under_its_lock(make_env: SyncEnvFactory) -> None:
    env = await make_env()
    (user,) = await make_users(env.pool, 1)
    await _slot(env, 11)
    await _booked(env, 11, user)
    service = SyncService(env.engine, env.redis, env.pool, archive_after_s=AFTER_S)
    lock = env.redis.lock(env.engine.keys.lock("archive"), timeout=5)
    assert await lock.acquire()
    assert await service.archive(now_ms=ARCHIVE_AT) is None  # another process archives
    await lock.release()
    stats = await service.archive(now_ms=ARCHIVE_AT)
    assert stats is not None and stats.archived == 1
    assert await _archived_at(env, 11) is not None
