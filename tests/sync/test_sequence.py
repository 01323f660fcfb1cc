"""SPEC "Durability and sync": Redis going back in time is detected, not only Redis
being empty. A partition's keys are written back as they were earlier (DUMP /
RESTORE, what an old AOF or a lagging replica amounts to); the partition fails
closed, is rebuilt from PostgreSQL, and resumes after PostgreSQL's sequence."""

from __future__ import annotations

from typing import Any

import orjson

from engine import Engine, StateUnavailable
from sync.drain import drain_all
from sync.durable import write_through
from sync.events import Entry, write_batch
from sync.restore import ensure_partitions
from sync.sequence import fail_rewound_partitions, recorded_sequence

from .conftest import SyncEnvFactory
from .helpers import make_slots, make_users

SLOT = 1


async def _snapshot(engine: Engine, redis: Any, partition: int) -> dict[str, bytes]:
    keys = engine.keys.partition(partition)
    return {k: await redis.dump(k) for k in keys if await redis.exists(k)}


async def _write_back(redis: Any, dumps: dict[str, bytes]) -> None:
    for key, value in dumps.items():
        await redis.restore(key, 0, value, replace=True)


async def _sequence(engine: Engine, redis: Any, partition: int) -> int:
    return int(await redis.hget(engine.keys.slots(partition), "seq"))


async def test_partition_behind_postgres_fails_closed_and_is_rebuilt(
    make_env: SyncEnvFactory,
) -> None:
    env = await make_env()
    engine, redis, pool = env.engine, env.redis, env.pool
    (user,) = await make_users(pool, 1)
    await make_slots(engine, pool, [SLOT], capacity=10)
    partition = engine.keys.partition_of(SLOT)
    early = (await engine.hold(SLOT, user, "a")).hold
    await drain_all(engine, redis, pool)
    older = await _snapshot(engine, redis, partition)

    later = (await engine.hold(SLOT, user, "b")).hold
    await engine.confirm(later.hold_id, user)
    await drain_all(engine, redis, pool)
    stream = engine.keys.events(partition)
    assert await recorded_sequence(pool, stream) == 4

    await _write_back(redis, older)  # the partition goes back in time
    assert await _sequence(engine, redis, partition) == 2
    assert await fail_rewound_partitions(engine, redis, pool) == [partition]
    try:
        await engine.hold(SLOT, user, "c")
        raise AssertionError("a rewound partition must refuse commands")
    except StateUnavailable:
        pass
    assert await ensure_partitions(engine, redis, pool) == [partition]
    # Rebuilt with what PostgreSQL has, and new events continue after its sequence.
    assert (await engine.get_hold(later.hold_id)).status == "confirmed"
    assert (await engine.get_hold(early.hold_id)).status == "held"
    slot = await engine.slot(SLOT)
    assert (slot.remaining, slot.held, slot.confirmed) == (8, 1, 1)
    assert await _sequence(engine, redis, partition) == 4
    await engine.hold(SLOT, user, "d")
    await drain_all(engine, redis, pool)
    assert await recorded_sequence(pool, stream) == 5
    assert await fail_rewound_partitions(engine, redis, pool) == []


async def test_drain_catches_a_rewind_that_already_sold_past_the_old_sequence(
    make_env: SyncEnvFactory,
) -> None:
    """Redis went back and kept selling, so its sequence is ahead again before the
    periodic check: the drain sees sequence numbers reused on newer entries."""
    env = await make_env()
    engine, redis, pool = env.engine, env.redis, env.pool
    (user,) = await make_users(pool, 1)
    await make_slots(engine, pool, [SLOT], capacity=10)
    partition = engine.keys.partition_of(SLOT)
    older = await _snapshot(engine, redis, partition)
    lost = (await engine.hold(SLOT, user, "lost")).hold
    await engine.confirm(lost.hold_id, user)
    await drain_all(engine, redis, pool)

    await _write_back(redis, older)
    for n in range(5):
        await engine.hold(SLOT, user, f"after-{n}")
    assert await fail_rewound_partitions(engine, redis, pool) == []  # ahead again
    await drain_all(engine, redis, pool)
    assert await engine.unavailable_partitions() == [partition]  # the drain failed it closed
    assert await ensure_partitions(engine, redis, pool) == [partition]
    assert (await engine.get_hold(lost.hold_id)).status == "confirmed"
    slot = await engine.slot(SLOT)
    assert (slot.held, slot.confirmed) == (5, 1)


async def test_same_hold_version_with_other_content_is_parked_not_dropped(
    make_env: SyncEnvFactory,
) -> None:
    """After a rewind Redis may say 'v2 expired' of a hold PostgreSQL has as 'v2
    confirmed': the event is parked in sync_rejects, the booking stays."""
    env = await make_env()
    engine, redis, pool = env.engine, env.redis, env.pool
    (user,) = await make_users(pool, 1)
    await make_slots(engine, pool, [SLOT], capacity=10)
    hold = (await engine.hold(SLOT, user, "a")).hold
    confirmed = (await engine.confirm(hold.hold_id, user)).hold
    await drain_all(engine, redis, pool)
    stream = engine.keys.events(engine.keys.partition_of(SLOT))
    other = {**confirmed.to_stored(), "st": "expired", "xa": confirmed.expires_at_ms, "n": 99}
    del other["cf"]
    copy = Entry(stream, "9999999999999-0", "h", orjson.dumps(confirmed.to_stored()))
    conflict = Entry(stream, "9999999999999-1", "h", orjson.dumps(other))
    assert await write_batch(pool, [copy, conflict]) == 0

    row = await pool.fetchrow("SELECT status, version FROM holds WHERE hold_id = $1", hold.hold_id)
    assert (row["status"], row["version"]) == ("confirmed", 2)
    # The copy (same hold, version and content under another entry id) is skipped.
    parked = await pool.fetch("SELECT entry_id, error FROM sync_rejects")
    assert [r["entry_id"] for r in parked] == ["9999999999999-1"]
    assert "audit conflict" in parked[0]["error"]
    assert "v2 expired" in parked[0]["error"] and "v2 confirmed" in parked[0]["error"]


async def test_a_confirm_written_through_on_a_rewound_partition_fails_it_closed(
    make_env: SyncEnvFactory,
) -> None:
    """No drain and no periodic check: the confirm's own write-through sees the
    sequence reused on a newer entry, commits (PostgreSQL arbitrated it) and fails
    the partition closed."""
    env = await make_env()
    engine, redis, pool = env.engine, env.redis, env.pool
    (user,) = await make_users(pool, 1)
    await make_slots(engine, pool, [SLOT], capacity=10)
    partition = engine.keys.partition_of(SLOT)
    older = await _snapshot(engine, redis, partition)
    first = (await engine.hold(SLOT, user, "first")).hold
    await write_through(engine, redis, pool, await engine.confirm(first.hold_id, user))

    await _write_back(redis, older)
    again = (await engine.hold(SLOT, user, "again")).hold
    confirmed = await engine.confirm(again.hold_id, user)  # sequence 3 again, newer entry
    await write_through(engine, redis, pool, confirmed)
    assert await engine.unavailable_partitions() == [partition]
    rows = await pool.fetch("SELECT hold_id, status FROM holds ORDER BY created_at")
    assert [(r["hold_id"], r["status"]) for r in rows] == [
        (first.hold_id, "confirmed"),
        (again.hold_id, "confirmed"),
    ]
    assert await ensure_partitions(engine, redis, pool) == [partition]
    slot = await engine.slot(SLOT)
    assert (slot.confirmed, slot.remaining) == (2, 8)
