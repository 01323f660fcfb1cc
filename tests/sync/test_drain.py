"""Draining the event streams into PostgreSQL, on the shared servers.

Each test has its own database (copied from a migrated template) and its own key
prefix, with 4 partitions; slots 1..4 fall one in each partition.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

import sync.drain
from sync.drain import GROUP, drain_all, drain_partition, drain_stream, ensure_group, sync_lag_ms
from sync.events import Entry, write_batch

from .conftest import SyncEnvFactory
from .helpers import (
    SyncEnv,
    assert_postgres_matches_redis,
    make_slots,
    make_users,
    pending_count,
    stream_ids,
)

SLOTS = [1, 2, 3, 4]


class Killed(Exception):
    """Stands for a worker process dying at a chosen point."""


async def _setup(make_env: SyncEnvFactory, **overrides: Any) -> tuple[SyncEnv, list[str]]:
    env = await make_env(**overrides)
    users = await make_users(env.pool, 2)
    await make_slots(env.engine, env.pool, SLOTS, capacity=50)
    return env, users


async def _workload(env: SyncEnv, users: list[str]) -> None:
    """Holds on every slot by both users; some confirmed, some cancelled, one booking
    cancelled (versions up to 3)."""
    engine = env.engine
    n = 0
    for slot_id in SLOTS:
        for user in users:
            for _ in range(3):
                n += 1
                hold = (await engine.hold(slot_id, user, f"w{n}")).hold
                if n % 3 == 0:
                    await engine.confirm(hold.hold_id, user)
                    if n % 6 == 0:
                        await engine.cancel(hold.hold_id, user)
                elif n % 3 == 1:
                    await engine.cancel(hold.hold_id, user)


async def _count(env: SyncEnv, table: str) -> int:
    return int(await env.pool.fetchval(f"SELECT count(*) FROM {table}"))


async def _stream_lengths(env: SyncEnv) -> int:
    return sum(
        [await env.redis.xlen(env.engine.keys.events(p)) for p in range(env.settings.partitions)]
    )


async def test_drain_writes_every_event_once_then_trims(make_env: SyncEnvFactory) -> None:
    env, users = await _setup(make_env)
    await _workload(env, users)
    entries = await _stream_lengths(env)
    assert entries > len(SLOTS) * 6

    written = await drain_all(env.engine, env.redis, env.pool)

    assert written == entries
    events = await assert_postgres_matches_redis(env.engine, env.pool)
    assert events + await _count(env, "slot_events") == entries
    assert await _count(env, "sync_rejects") == 0
    assert await pending_count(env.engine, env.redis) == {}
    assert await _stream_lengths(env) == 0  # everything written and acknowledged is trimmed

    # Nothing left: a second drain writes nothing and changes nothing.
    assert await drain_all(env.engine, env.redis, env.pool) == 0
    assert await _count(env, "hold_events") == events


async def test_older_version_never_overwrites_newer(make_env: SyncEnvFactory) -> None:
    env, users = await _setup(make_env)
    engine = env.engine
    hold = (await engine.hold(1, users[0], "a")).hold
    await engine.confirm(hold.hold_id, users[0])
    await engine.cancel(hold.hold_id, users[0])
    stream = engine.keys.events(1)
    by_version = {}
    for entry_id, fields in await env.redis.xrange(stream):
        if b"h" in fields:
            version = orjson.loads(fields[b"h"])["v"]
            by_version[version] = Entry(stream, entry_id.decode(), "h", fields[b"h"])
    assert sorted(by_version) == [1, 2, 3]

    # Newest first, then the oldest in a later batch, then the middle one: the row
    # stays at v3 'cancelled' and every event is kept once.
    assert await write_batch(env.pool, [by_version[3], by_version[1]]) == 0
    assert await write_batch(env.pool, [by_version[2]]) == 0
    row = await env.pool.fetchrow(
        "SELECT status, version, confirmed_at, cancelled_at FROM holds WHERE hold_id = $1",
        hold.hold_id,
    )
    assert (row["status"], row["version"]) == ("cancelled", 3)
    assert row["confirmed_at"] is not None and row["cancelled_at"] is not None
    assert await _count(env, "hold_events") == 3

    # The stream still has them all (never acknowledged): draining applies them again,
    # in order, and nothing changes.
    await drain_all(engine, env.redis, env.pool)
    assert await _count(env, "hold_events") == 3
    await assert_postgres_matches_redis(engine, env.pool)


async def test_acknowledges_only_after_commit(
    make_env: SyncEnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, users = await _setup(make_env)
    await _workload(env, users)
    engine, redis = env.engine, env.redis
    stream = engine.keys.events(1)
    ids = await stream_ids(engine, redis, 1)
    real_write = write_batch

    async def postgres_down(pool: Any, entries: list[Entry], **_: Any) -> int:
        raise ConnectionError("postgres went away")

    # The write fails: nothing is acknowledged, nothing trimmed, nothing written.
    monkeypatch.setattr(sync.drain, "write_batch", postgres_down)
    with pytest.raises(ConnectionError):
        await drain_partition(engine, redis, env.pool, 1, consumer="a")
    assert await pending_count(engine, redis) == {"a": len(ids)}
    assert await stream_ids(engine, redis, 1) == ids
    assert await _count(env, "hold_events") == 0

    # Another consumer claims them; this time the worker dies after the commit and
    # before XACK: written, still pending, still in the stream.
    async def dies_after_commit(pool: Any, entries: list[Entry], **options: Any) -> int:
        await real_write(pool, entries, **options)
        raise Killed("between commit and ack")

    monkeypatch.setattr(sync.drain, "write_batch", dies_after_commit)
    with pytest.raises(Killed):
        await drain_partition(engine, redis, env.pool, 1, consumer="b", claim_idle_ms=0)
    assert await pending_count(engine, redis) == {"b": len(ids)}
    assert await stream_ids(engine, redis, 1) == ids
    written_once = await _count(env, "hold_events")
    assert written_once == len(ids) - 1  # all but the slot's creation event

    # A healthy drain applies them again: no copy, then acknowledged and trimmed.
    monkeypatch.setattr(sync.drain, "write_batch", real_write)
    await drain_stream(engine, redis, env.pool, 1, consumer="c")
    assert await _count(env, "hold_events") == written_once
    assert await stream_ids(engine, redis, 1) == []
    assert await pending_count(engine, redis) == {}
    await drain_all(engine, redis, env.pool)
    await assert_postgres_matches_redis(engine, env.pool)
    assert (await redis.xpending(stream, GROUP))["pending"] == 0


async def test_trim_keeps_every_entry_not_yet_acknowledged(make_env: SyncEnvFactory) -> None:
    env, users = await _setup(make_env)
    engine, redis = env.engine, env.redis
    for i in range(9):
        await engine.hold(2, users[i % 2], f"t{i}")
    ids = await stream_ids(engine, redis, 2)
    assert len(ids) == 10  # the slot's creation + 9 holds

    # Entries not yet delivered are never trimmed.
    stats = await drain_partition(engine, redis, env.pool, 2, consumer="w", batch=4)
    assert stats.written == 4
    assert await stream_ids(engine, redis, 2) == ids[4:]

    # A consumer reads two and stalls: the next batches write past them, but the
    # stream keeps everything from its oldest unacknowledged entry on.
    stream = engine.keys.events(2)
    await ensure_group(redis, stream)
    await redis.xreadgroup(GROUP, "ghost", {stream: ">"}, count=2)
    for _ in range(2):
        await drain_partition(engine, redis, env.pool, 2, consumer="w", claim_idle_ms=60_000)
    assert await stream_ids(engine, redis, 2) == ids[4:]
    in_pg = {r["entry_id"] for r in await env.pool.fetch("SELECT entry_id FROM hold_events")}
    in_pg |= {r["entry_id"] for r in await env.pool.fetch("SELECT entry_id FROM slot_events")}
    assert in_pg == set(ids) - set(ids[4:6])

    # Claimed once stale, written, and only then trimmed.
    await drain_stream(engine, redis, env.pool, 2)
    assert await stream_ids(engine, redis, 2) == []
    await assert_postgres_matches_redis(engine, env.pool)


async def test_poison_event_is_parked_and_does_not_block(make_env: SyncEnvFactory) -> None:
    env, users = await _setup(make_env)
    engine, redis = env.engine, env.redis
    stream = engine.keys.events(3)
    before = (await engine.hold(3, users[0], "before")).hold
    # A user PostgreSQL does not know (foreign key), twice (held, then confirmed),
    # an entry that is not JSON at all, and JSON that is not an object.
    ghost = (await engine.hold(3, "999999999", "ghost")).hold
    await engine.confirm(ghost.hold_id, "999999999")
    await redis.xadd(stream, {"h": b"{not json"})
    await redis.xadd(stream, {"h": b"[]"})
    after = (await engine.hold(3, users[1], "after")).hold

    stats = await drain_partition(engine, redis, env.pool, 3, consumer="w")

    assert (stats.written, stats.rejected) == (3, 4)  # slot event, before, after
    rejects = await env.pool.fetch("SELECT entry_id, payload, error FROM sync_rejects")
    assert len(rejects) == 4
    assert sum("ForeignKeyViolation" in r["error"] for r in rejects) == 2
    assert sum(ghost.hold_id in r["payload"] for r in rejects) == 2
    statuses = dict(await env.pool.fetch("SELECT hold_id, status FROM holds"))
    assert statuses == {before.hold_id: "held", after.hold_id: "held"}
    assert await pending_count(engine, redis) == {}
    assert await stream_ids(engine, redis, 3) == []

    # Rejected entries are acknowledged: draining again parks nothing twice.
    await engine.hold(3, users[0], "later")
    await drain_all(engine, redis, env.pool)
    assert await _count(env, "sync_rejects") == 4
    assert await _count(env, "holds") == 3
    assert await sync_lag_ms(engine, redis) == 0


async def test_sync_lag_grows_while_undrained_and_is_zero_after(
    make_env: SyncEnvFactory,
) -> None:
    env, users = await _setup(make_env)
    engine, redis = env.engine, env.redis
    # Before any consumer group exists, every entry counts.
    first = await sync_lag_ms(engine, redis)
    await asyncio.sleep(0.3)
    second = await sync_lag_ms(engine, redis)
    assert second >= 300 and second > first
    await drain_all(engine, redis, env.pool)
    assert await sync_lag_ms(engine, redis) == 0

    # Undelivered entries behind an existing group.
    await engine.hold(4, users[0], "l1")
    await asyncio.sleep(0.2)
    assert await sync_lag_ms(engine, redis) >= 200
    # Delivered to a consumer but not acknowledged: still lag.
    stream = engine.keys.events(0)
    await redis.xreadgroup(GROUP, "slow", {stream: ">"})
    await asyncio.sleep(0.1)
    assert await sync_lag_ms(engine, redis) >= 300
    await drain_all(engine, redis, env.pool)
    assert await sync_lag_ms(engine, redis) == 0


async def test_trim_never_drops_entries_read_meanwhile_by_another_worker(
    make_env: SyncEnvFactory,
) -> None:
    """Another worker's XREADGROUP may land between the round trips with which a
    trim finds its floor; what it read is unacknowledged and must stay."""
    env, users = await _setup(make_env)
    engine, redis = env.engine, env.redis
    stream = engine.keys.events(2)
    for i in range(4):
        await engine.hold(2, users[0], f"r{i}")
    ids = await stream_ids(engine, redis, 2)  # slot creation + 4 holds
    await ensure_group(redis, stream)
    raced: list[str] = []

    def racing(name: str) -> Any:
        real = getattr(redis, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = await real(*args, **kwargs)
            if not raced:  # right after the trim's first look at the group
                reply = await redis.xreadgroup(GROUP, "other", {stream: ">"})
                raced.extend(entry_id.decode() for entry_id, _ in reply[0][1])
            return result

        return call

    real_redis_calls = {name: getattr(redis, name) for name in ("xpending", "xinfo_groups")}
    for name in real_redis_calls:
        setattr(redis, name, racing(name))
    try:
        await drain_partition(engine, redis, env.pool, 2, consumer="w", batch=2)
    finally:
        for name, call in real_redis_calls.items():
            setattr(redis, name, call)

    assert raced == ids[2:]
    assert await stream_ids(engine, redis, 2) == ids[2:]  # read, never written: kept
    # "other" dies; its entries are claimed and written in full.
    await drain_stream(engine, redis, env.pool, 2)
    await drain_all(engine, redis, env.pool)
    await assert_postgres_matches_redis(engine, env.pool)
