"""Extensions and partial confirms reach the durable record, its audit and the feed."""

from __future__ import annotations

from dataclasses import replace

from sync import feed
from sync.drain import drain_all
from sync.holds import stored_hold
from sync.restore import restore_partition

from .conftest import SyncEnvFactory
from .helpers import assert_postgres_matches_redis, make_slots, make_users


async def test_extension_and_partial_confirm_are_durable_and_audited(
    make_env: SyncEnvFactory,
) -> None:
    env = await make_env()
    (user,) = await make_users(env.pool, 1)
    await make_slots(env.engine, env.pool, [1], capacity=10)
    eng = env.engine
    hold = (await eng.hold(1, user, "k", 4)).hold
    extended = (await eng.lifecycle.extend(hold.hold_id, user)).hold
    await drain_all(eng, env.redis, env.pool)
    assert await stored_hold(env.pool, hold.hold_id) == replace(extended, idempotency_key="k")

    confirmed = (await eng.confirm(hold.hold_id, user, quantity=3)).hold
    await drain_all(eng, env.redis, env.pool)

    stored = await stored_hold(env.pool, hold.hold_id)
    assert stored is not None
    assert (stored.quantity, stored.status, stored.extensions) == (3, "confirmed", 1)
    assert stored.expires_at_ms == extended.expires_at_ms == confirmed.expires_at_ms
    await assert_postgres_matches_redis(eng, env.pool)
    rows = await env.pool.fetch(
        "SELECT version, status, quantity, extended, released FROM hold_events"
        " WHERE hold_id = $1 ORDER BY version",
        hold.hold_id,
    )
    assert [tuple(r) for r in rows] == [
        (1, "held", 4, False, 0),
        (2, "held", 4, True, 0),
        (3, "confirmed", 3, False, 1),
    ]
    events = await feed.read(
        env.pool, slot_id=1, types=["hold.held", "hold.extended", "hold.confirmed"]
    )
    assert [e.type for e in events] == ["hold.held", "hold.extended", "hold.confirmed"]
    assert events[1].data["extensions"] == 1
    assert events[1].data["version"] == 2 and events[1].data["status"] == "held"
    assert events[2].data["released"] == 1 and events[2].data["quantity"] == 3


async def test_rebuild_keeps_the_extension_count(make_env: SyncEnvFactory) -> None:
    env = await make_env()
    (user,) = await make_users(env.pool, 1)
    await make_slots(env.engine, env.pool, [1], capacity=10)
    eng = env.engine
    hold = (await eng.hold(1, user, "k", 2)).hold
    extended = (await eng.lifecycle.extend(hold.hold_id, user)).hold
    await drain_all(eng, env.redis, env.pool)

    await restore_partition(eng, env.redis, env.pool, eng.keys.partition_of(1))

    assert await eng.get_hold(hold.hold_id) == extended  # extensions included
    assert (await eng.slot(1)).held == 2
