"""Hold events written by one statement, unpacked in PostgreSQL (sync/hold_batch.py),
and the feed rows PostgreSQL builds for them; the drain's Redis reads it skips."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import sync.drain
from sync import feed
from sync.drain import drain_all, drain_partition
from sync.events import Entry, write_batch

from .conftest import SyncEnvFactory
from .helpers import SyncEnv, assert_postgres_matches_redis, make_slots, make_users, stream_ids

SLOTS = [1, 2, 3, 4]


async def _setup(make_env: SyncEnvFactory) -> tuple[SyncEnv, list[str]]:
    env = await make_env()
    users = await make_users(env.pool, 2)
    await make_slots(env.engine, env.pool, SLOTS, capacity=50)
    return env, users


async def _hold_entries(env: SyncEnv, partition: int) -> list[Entry]:
    stream = env.engine.keys.events(partition)
    return [
        Entry(stream, entry_id.decode(), "h", fields[b"h"])
        for entry_id, fields in await env.redis.xrange(stream)
        if b"h" in fields
    ]


async def _every_kind_of_hold_event(env: SyncEnv, users: list[str]) -> None:
    """held (with its key), confirmed in part (units released), extended, cancelled,
    expired: all on slot 1 (partition 1)."""
    engine = env.engine
    partial = (await engine.hold(1, users[0], "partial", quantity=3)).hold
    await engine.confirm(partial.hold_id, users[0], quantity=1)
    extended = (await engine.hold(1, users[1], "extended")).hold
    await engine.lifecycle.extend(extended.hold_id, users[1])
    await engine.cancel(extended.hold_id, users[1])
    late = (await engine.hold(1, users[0], "late")).hold
    await engine.sweep(1, now_ms=late.expires_at_ms + 1)


async def test_feed_rows_built_in_postgres_say_what_python_says(
    make_env: SyncEnvFactory,
) -> None:
    env, users = await _setup(make_env)
    await _every_kind_of_hold_event(env, users)
    entries = await _hold_entries(env, 1)
    types = {feed._hold_row(e)[0] for e in entries}
    assert types == {"hold.held", "hold.confirmed", "hold.extended", "hold.cancelled"} | {
        "hold.expired"
    }
    assert any("released" in feed._hold_row(e)[3] for e in entries)

    await drain_all(env.engine, env.redis, env.pool)

    by_source = {
        (r["source"], r["source_id"]): r
        for r in await env.pool.fetch("SELECT source, source_id, feed_id FROM feed")
    }
    events = {e.feed_id: e for e in await feed.read(env.pool, limit=1000)}
    for entry in entries:
        event = events[by_source[(entry.stream, entry.entry_id)]["feed_id"]]
        kind, slot_id, occurred_at, data = feed._hold_row(entry)
        assert (event.type, event.slot_id, event.occurred_at) == (kind, slot_id, occurred_at)
        assert event.data == data
        assert list(event.data) == list(data)  # the same keys in the same order


async def test_audit_rows_and_hold_rows_from_the_payloads(make_env: SyncEnvFactory) -> None:
    env, users = await _setup(make_env)
    await _every_kind_of_hold_event(env, users)
    await drain_all(env.engine, env.redis, env.pool)
    await assert_postgres_matches_redis(env.engine, env.pool)

    rows = await env.pool.fetch(
        "SELECT e.status, e.quantity, e.extended, e.released, e.occurred_at,"
        " h.created_at, h.confirmed_at, h.idempotency_key"
        " FROM hold_events e JOIN holds h USING (hold_id) ORDER BY e.event_id"
    )
    assert [(r["status"], r["extended"]) for r in rows] == [
        ("held", False),
        ("confirmed", False),
        ("held", False),
        ("held", True),
        ("cancelled", False),
        ("held", False),
        ("expired", False),
    ]
    held, confirmed = rows[0], rows[1]
    assert (held["quantity"], held["released"]) == (3, 0)
    assert (confirmed["quantity"], confirmed["released"]) == (1, 2)  # 2 units given back
    assert held["occurred_at"] == held["created_at"]
    assert confirmed["occurred_at"] == confirmed["confirmed_at"]
    assert rows[3]["occurred_at"] >= rows[2]["occurred_at"]  # the extension, after the hold
    keys = await env.pool.fetch("SELECT idempotency_key FROM holds ORDER BY created_at")
    assert [r["idempotency_key"] for r in keys] == ["partial", "extended", "late"]


async def test_one_batch_with_several_versions_of_a_hold(make_env: SyncEnvFactory) -> None:
    """Held (with the key) and confirmed in one batch: the row is the newest version
    and keeps the key only the first event carries; replaying changes nothing."""
    env, users = await _setup(make_env)
    hold = (await env.engine.hold(2, users[0], "k-2")).hold
    await env.engine.confirm(hold.hold_id, users[0])
    entries = await _hold_entries(env, 2)
    assert len(entries) == 2

    for _ in range(2):
        assert await write_batch(env.pool, entries) == 0
        row = await env.pool.fetchrow("SELECT * FROM holds WHERE hold_id = $1", hold.hold_id)
        assert (row["status"], row["version"], row["idempotency_key"]) == ("confirmed", 2, "k-2")
        assert await env.pool.fetchval("SELECT confirmed FROM slots WHERE slot_id = 2") == 1
        assert await env.pool.fetchval("SELECT count(*) FROM hold_events") == 2
        assert await env.pool.fetchval("SELECT count(*) FROM feed") == 2
        assert await env.pool.fetchval("SELECT count(*) FROM sync_rejects") == 0


async def test_a_repeated_dedupe_key_with_other_content_is_parked(
    make_env: SyncEnvFactory,
) -> None:
    env, users = await _setup(make_env)
    hold = (await env.engine.hold(3, users[0], "p")).hold
    (entry,) = await _hold_entries(env, 3)
    assert await write_batch(env.pool, [entry]) == 0
    # The same hold version under another entry id, with another status and quantity.
    forged = orjson.loads(entry.payload) | {"st": "cancelled", "ca": hold.created_at_ms + 5}
    other = Entry(entry.stream, "1-1", "h", orjson.dumps(forged))
    again = Entry(entry.stream, entry.entry_id, "h", orjson.dumps(forged | {"q": 2}))

    assert await write_batch(env.pool, [other, again]) == 0
    rejects = await env.pool.fetch("SELECT entry_id, error FROM sync_rejects ORDER BY entry_id")
    assert [r["entry_id"] for r in rejects] == sorted(["1-1", entry.entry_id])
    assert all("audit conflict" in r["error"] and hold.hold_id in r["error"] for r in rejects)
    row = await env.pool.fetchrow("SELECT status, quantity FROM holds")
    assert (row["status"], row["quantity"]) == ("held", 1)  # what was on record stays
    assert await env.pool.fetchval("SELECT count(*) FROM hold_events") == 1


async def test_unreadable_payloads_are_parked_one_by_one(make_env: SyncEnvFactory) -> None:
    env, users = await _setup(make_env)
    await env.engine.hold(4, users[0], "fine")
    (good,) = await _hold_entries(env, env.engine.keys.partition_of(4))
    bad: list[Any] = [
        b"",  # empty
        b'{"i": "x\x1e"}',  # the separator of the joined texts (not valid JSON either)
        b"\xff\xfe",  # not UTF-8
        b'{"i": "4-x"}',  # fields missing
    ]
    entries = [Entry(good.stream, f"2-{n}", "h", p) for n, p in enumerate(bad)] + [good]
    assert await write_batch(env.pool, entries) == len(bad)
    assert await env.pool.fetchval("SELECT count(*) FROM sync_rejects") == len(bad)
    assert await env.pool.fetchval("SELECT count(*) FROM holds") == 1
    assert await env.pool.fetchval("SELECT count(*) FROM feed") == 1


async def test_drain_recreates_a_lost_group_and_reads_its_own_pending_after_a_failure(
    make_env: SyncEnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, users = await _setup(make_env)
    engine, redis = env.engine, env.redis
    await engine.hold(1, users[0], "a")
    await drain_partition(engine, redis, env.pool, 1, consumer="w")
    assert await stream_ids(engine, redis, 1) == []

    # The stream (and its group) is gone, as after Redis lost its data.
    await redis.delete(engine.keys.events(1))
    await engine.hold(1, users[0], "b")
    stats = await drain_partition(engine, redis, env.pool, 1, consumer="w")
    assert stats.written == 1
    assert await env.pool.fetchval("SELECT count(*) FROM holds") == 2

    # A consumer whose write failed reads its own pending entries again first.
    await engine.hold(1, users[0], "c")

    async def postgres_down(pool: Any, entries: list[Entry], **_: Any) -> int:
        raise ConnectionError("postgres went away")

    monkeypatch.setattr(sync.drain, "write_batch", postgres_down)
    with pytest.raises(ConnectionError):
        await drain_partition(engine, redis, env.pool, 1, consumer="w")
    monkeypatch.undo()
    stats = await drain_partition(engine, redis, env.pool, 1, consumer="w", claim_idle_ms=60_000)
    assert (stats.claimed, stats.written) == (1, 1)
    assert await stream_ids(engine, redis, 1) == []
    await assert_postgres_matches_redis(engine, env.pool)
