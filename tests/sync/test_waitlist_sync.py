"""Waitlist entries in PostgreSQL: drained with their events, in the feed, restored
in join order, covered by reconcile."""

from __future__ import annotations

from sync import feed
from sync.drain import drain_all
from sync.reconcile import reconcile
from sync.restore import restore_partition
from sync.waitlist import waitlist_counts

from .conftest import SyncEnvFactory
from .helpers import make_slots, make_users


async def test_entries_reach_postgres_the_feed_and_come_back_after_a_lost_partition(
    make_env: SyncEnvFactory,
) -> None:
    env = await make_env()
    engine, pool = env.engine, env.pool
    users = await make_users(pool, 6)
    await make_slots(engine, pool, [4], capacity=1)
    hold = (await engine.hold(4, users[0], "h")).hold
    line = [(await engine.waitlist.join(4, u, "k"))[0] for u in users[1:5]]
    await engine.waitlist.leave(line[1].entry_id, users[2])
    await engine.cancel(hold.hold_id, users[0])  # line[0] gets the offer
    await drain_all(engine, env.redis, pool)

    rows = await pool.fetch("SELECT entry_id, status FROM waitlist_entries ORDER BY seq")
    assert [(r["entry_id"], r["status"]) for r in rows] == [
        (line[0].entry_id, "offered"),
        (line[1].entry_id, "left"),
        (line[2].entry_id, "waiting"),
        (line[3].entry_id, "waiting"),
    ]
    events = await pool.fetch("SELECT status FROM waitlist_events ORDER BY event_id")
    assert sorted(r["status"] for r in events) == ["left", "offered"] + ["waiting"] * 4
    types = [e.type for e in await feed.read(pool, types=[t for t in feed.EVENT_TYPES])]
    assert types.count("waitlist.waiting") == 4
    assert types.count("waitlist.offered") == types.count("waitlist.left") == 1
    offered_hold = await pool.fetchval(
        "SELECT status FROM holds WHERE hold_id = $1", line[0].entry_id
    )
    assert offered_hold == "held"
    counts = await waitlist_counts(pool)
    assert counts == {"waiting": 2, "offers_made": 1, "offers_taken": 0, "offers_lapsed": 0}
    assert await reconcile(engine, env.redis, pool) == []

    # Redis loses the partition: the rebuild puts the line back in order.
    partition = engine.keys.partition_of(4)
    keys = engine.keys.partition(partition)
    await env.redis.delete(*keys[:6], *keys[7:])  # all but the stream
    await restore_partition(engine, env.redis, pool, partition)
    assert [(await engine.waitlist.get(e.entry_id)).position for e in line[2:]] == [1, 2]
    assert (await engine.waitlist.get(line[0].entry_id)).status == "offered"
    late = (await engine.waitlist.join(4, users[5], "k"))[0]
    assert late.position == 3 and late.seq > line[3].seq
    # The offer is cancelled: the next in line (after the rebuild) gets it.
    await engine.cancel(line[0].entry_id, users[1])
    assert (await engine.waitlist.get(line[2].entry_id)).status == "offered"
    await drain_all(engine, env.redis, pool)
    assert await reconcile(engine, env.redis, pool) == []
