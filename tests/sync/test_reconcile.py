"""Reconciliation and restore: in-process, and through the `slotkeeper` CLI."""

from __future__ import annotations

from pathlib import Path

from engine import Engine, Slot
from sync.drain import drain_all
from sync.reconcile import reconcile

from ..conftest import _drop_prefix
from .conftest import SyncEnvFactory
from .helpers import (
    SyncEnv,
    all_redis_holds,
    assert_postgres_matches_redis,
    cli_env,
    make_slots,
    make_users,
    run_cli,
)

SLOTS = [1, 2, 3, 4]


async def _booked(make_env: SyncEnvFactory) -> tuple[SyncEnv, list[str], dict[str, str]]:
    """Slots 1..4 with a confirmed hold, a held one and a cancelled one each, drained.
    Returns the env, users, and hold ids by name ('<status><slot>')."""
    env = await make_env()
    users = await make_users(env.pool, 2)
    await make_slots(env.engine, env.pool, SLOTS, capacity=10)
    engine = env.engine
    names: dict[str, str] = {}
    for slot_id in SLOTS:
        confirmed = (await engine.hold(slot_id, users[0], f"c{slot_id}", 2)).hold
        await engine.confirm(confirmed.hold_id, users[0])
        held = (await engine.hold(slot_id, users[1], f"h{slot_id}")).hold
        cancelled = (await engine.hold(slot_id, users[1], f"x{slot_id}", 3)).hold
        await engine.cancel(cancelled.hold_id, users[1])
        names |= {
            f"confirmed{slot_id}": confirmed.hold_id,
            f"held{slot_id}": held.hold_id,
            f"cancelled{slot_id}": cancelled.hold_id,
        }
    await drain_all(engine, env.redis, env.pool)
    return env, users, names


async def _induce_drift(env: SyncEnv, names: dict[str, str]) -> None:
    """Four kinds: PostgreSQL behind on a hold's status, a hold row lost in
    PostgreSQL, a live hold lost in Redis, a counter wrong in Redis."""
    await env.pool.execute(
        "UPDATE holds SET status = 'held', confirmed_at = NULL, version = 1 WHERE hold_id = $1",
        names["confirmed1"],
    )
    await env.pool.execute("DELETE FROM holds WHERE hold_id = $1", names["held2"])
    await env.redis.hdel(env.engine.keys.holds(3), names["held3"])
    await env.redis.hincrby(env.engine.keys.slots(0), "4:rem", -1)


def _slot_view(slot: Slot) -> tuple[int, int, int, int, str]:
    return (slot.capacity, slot.remaining, slot.held, slot.confirmed, slot.state)


async def _redis_state(engine: Engine) -> tuple[dict[int, tuple[int, int, int, int, str]], dict]:
    slots = {s.slot_id: _slot_view(s) for s in await engine.availability()}
    holds = {
        h.hold_id: (h.status, h.version, h.quantity, h.expires_at_ms)
        for h in (await all_redis_holds(engine)).values()
    }
    return slots, holds


async def test_reconcile_reports_drift_and_repairs_it(make_env: SyncEnvFactory) -> None:
    env, _, names = await _booked(make_env)
    engine, redis, pool = env.engine, env.redis, env.pool
    before = await _redis_state(engine)
    assert await reconcile(engine, redis, pool) == []

    await _induce_drift(env, names)
    found = await reconcile(engine, redis, pool)
    by_partition = {d.partition: "\n".join(d.problems) for d in found}
    assert sorted(by_partition) == [0, 1, 2, 3]
    assert names["confirmed1"] in by_partition[1] and "postgres held v1" in by_partition[1]
    assert names["held2"] in by_partition[2] and "postgres missing" in by_partition[2]
    assert names["held3"] in by_partition[3] and "missing in redis" in by_partition[3]
    assert "slot 4:" in by_partition[0]
    # Reporting alone changes nothing.
    assert [d.partition for d in await reconcile(engine, redis, pool)] == [0, 1, 2, 3]

    repaired = await reconcile(engine, redis, pool, repair=True)
    assert [d.partition for d in repaired] == [0, 1, 2, 3]
    assert await reconcile(engine, redis, pool) == []
    # Every side is back where it was: PostgreSQL caught up with Redis, Redis got its
    # lost hold and its counter back from PostgreSQL.
    assert await _redis_state(engine) == before
    await assert_postgres_matches_redis(engine, pool)
    # The writes are recorded as repairs; the audit keeps only what the streams said.
    repairs = await pool.fetch("SELECT hold_id, status, source FROM hold_repairs")
    assert {(r["hold_id"], r["status"], r["source"]) for r in repairs} == {
        (names["confirmed1"], "confirmed", "reconcile"),
        (names["held2"], "held", "reconcile"),
    }
    assert not await pool.fetchval(
        "SELECT count(*) FROM hold_events WHERE stream NOT LIKE '%:events'"
    )
    # Redis does not keep a hold's idempotency key: the row rebuilt from it has none.
    assert (
        await pool.fetchval("SELECT idempotency_key FROM holds WHERE hold_id = $1", names["held2"])
        is None
    )


async def test_cli_reconcile_exit_codes(make_env: SyncEnvFactory, tmp_path: Path) -> None:
    env, _, names = await _booked(make_env)
    cli = cli_env(env.settings, tmp_path)

    clean = await run_cli("reconcile", env=cli)
    assert clean.returncode == 0, clean.stderr
    assert "no drift" in clean.stdout

    await _induce_drift(env, names)
    drifted = await run_cli("reconcile", env=cli)
    assert drifted.returncode == 1, drifted.stderr
    for partition in range(4):
        assert f"partition {partition}" in drifted.stdout
    for name in ("confirmed1", "held2", "held3"):
        assert names[name] in drifted.stdout
    assert "slot 4:" in drifted.stdout

    repaired = await run_cli("reconcile", "--repair", env=cli)
    assert repaired.returncode == 0, repaired.stderr
    assert "repaired" in repaired.stdout
    again = await run_cli("reconcile", env=cli)
    assert again.returncode == 0 and "no drift" in again.stdout, again.stdout


async def test_restore_from_postgres_after_losing_redis(
    make_env: SyncEnvFactory, tmp_path: Path
) -> None:
    env, users, names = await _booked(make_env)
    engine = env.engine
    before = await _redis_state(engine)

    await _drop_prefix(env.redis, env.settings.key_prefix)  # Redis came back empty
    assert await engine.unavailable_partitions() == [0, 1, 2, 3]
    done = await run_cli("restore", "--from", "postgres", env=cli_env(env.settings, tmp_path))
    assert done.returncode == 0, done.stderr

    assert await engine.unavailable_partitions() == []
    assert await _redis_state(engine) == before
    # Idempotency survives: the same key replays the same hold, no second one.
    replay = await engine.hold(2, users[1], "h2")
    assert not replay.changed and replay.hold.hold_id == names["held2"]
    assert await reconcile(engine, env.redis, env.pool) == []


async def test_restore_from_redis_after_losing_postgres_state(
    make_env: SyncEnvFactory, tmp_path: Path
) -> None:
    env, _, _ = await _booked(make_env)
    await env.pool.execute("DELETE FROM holds")
    await env.pool.execute("DELETE FROM slots")

    done = await run_cli("restore", "--from", "redis", env=cli_env(env.settings, tmp_path))
    assert done.returncode == 0, done.stderr
    assert "12 holds" in done.stdout

    slots = await env.pool.fetch("SELECT slot_id, capacity, state FROM slots ORDER BY slot_id")
    assert [tuple(r) for r in slots] == [(s, 10, "open") for s in SLOTS]
    await assert_postgres_matches_redis(env.engine, env.pool)
    assert await reconcile(env.engine, env.redis, env.pool) == []
