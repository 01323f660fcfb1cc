"""A partition rebuilt from PostgreSQL brings its hold groups back: the members keep
their group mark (they change only with the group) and the home partition gets the
group record (sync/group_restore.py), on real Redis and PostgreSQL."""

from __future__ import annotations

import pytest

from engine import Engine
from engine.errors import HoldInGroup
from engine.group_models import Group, GroupItem, GroupNotFound
from sync.drain import drain_all
from sync.durable import change_group_durably
from sync.holds import stored_hold
from sync.restore import restore_partition

from .conftest import SyncEnvFactory
from .helpers import SyncEnv, make_slots, make_users


def _two_partitions(engine: Engine) -> tuple[int, int]:
    """A home slot and a slot of another partition."""
    home = 1
    other = next(
        s for s in range(2, 50) if engine.keys.partition_of(s) != engine.keys.partition_of(home)
    )
    return home, other


async def _lose_and_rebuild(env: SyncEnv, slot_ids: tuple[int, ...]) -> None:
    """Redis loses the slots' partitions, streams included; each is rebuilt."""
    engine = env.engine
    for partition in sorted({engine.keys.partition_of(s) for s in slot_ids}):
        await engine.reset_partition(partition)
        await env.redis.delete(engine.keys.events(partition))
        keys = engine.keys
        for pattern in (
            keys.group(partition, "*"),
            keys.group_idempotency(partition, "*", "*"),
            keys.groups_due(partition),
        ):
            lost = [k async for k in env.redis.scan_iter(match=pattern)]
            if lost:
                await env.redis.delete(*lost)
        await restore_partition(engine, env.redis, env.pool, partition)


async def _make_group(env: SyncEnv, slots: tuple[int, int]) -> tuple[str, Group]:
    (user,) = await make_users(env.pool, 1)
    await make_slots(env.engine, env.pool, list(slots), capacity=5)
    items = [GroupItem(slots[0], 2), GroupItem(slots[1], 1)]
    group = (await env.engine.groups.hold(user, "k", items)).group
    return user, group


async def test_a_rebuild_keeps_members_in_their_group_and_brings_the_group_back(
    make_env: SyncEnvFactory,
) -> None:
    env = await make_env()
    engine = env.engine
    slots = _two_partitions(engine)
    user, group = await _make_group(env, slots)
    await drain_all(engine, env.redis, env.pool)
    member = group.members[1].hold_id
    stored = await stored_hold(env.pool, member)
    assert stored is not None and stored.group_id == group.group_id

    await _lose_and_rebuild(env, slots)

    # Each member is still the group's: not confirmed or cancelled alone.
    for m in group.members:
        assert (await engine.get_hold(m.hold_id)).group_id == group.group_id
        with pytest.raises(HoldInGroup):
            await engine.confirm(m.hold_id, user)
        with pytest.raises(HoldInGroup):
            await engine.cancel(m.hold_id, user)
    back = await engine.groups.get(group.group_id, user)
    assert (back.status, back.version, back.members) == ("held", group.version, group.members)
    assert (back.created_at_ms, back.expires_at_ms) == (group.created_at_ms, group.expires_at_ms)
    assert [h.status for h in back.holds] == ["held", "held"]
    assert [(await engine.slot(s)).held for s in slots] == [2, 1]
    # The key that made it is bound again: a retried request replays the group.
    replay = await engine.groups.hold(user, "k", list(group.items))
    assert not replay.changed and replay.group.group_id == group.group_id

    confirmed = (
        await change_group_durably(engine, env.pool, "confirm", group.group_id, user)
    ).group
    assert confirmed.status == "confirmed"
    assert {h.status for h in confirmed.holds} == {"confirmed"}
    await drain_all(engine, env.redis, env.pool)

    await _lose_and_rebuild(env, slots)  # the confirmed group stays (a booking)
    again = await engine.groups.get(group.group_id, user)
    assert (again.status, again.version) == ("confirmed", confirmed.version)
    assert again.confirmed_at_ms == confirmed.confirmed_at_ms
    assert [(await engine.slot(s)).confirmed for s in slots] == [2, 1]
    with pytest.raises(HoldInGroup):
        await engine.cancel(member, user)
    cancelled = (await change_group_durably(engine, env.pool, "cancel", group.group_id, user)).group
    assert cancelled.status == "cancelled"
    assert [(await engine.slot(s)).remaining for s in slots] == [5, 5]


async def test_a_confirm_written_through_survives_the_loss_of_the_group_event(
    make_env: SyncEnvFactory,
) -> None:
    """The confirm writes the members through; Redis loses the stream with the
    group's own confirmed event: the members say the group was confirmed."""
    env = await make_env()
    engine = env.engine
    slots = _two_partitions(engine)
    user, group = await _make_group(env, slots)
    await drain_all(engine, env.redis, env.pool)
    confirmed = (
        await change_group_durably(engine, env.pool, "confirm", group.group_id, user)
    ).group

    await _lose_and_rebuild(env, slots)

    back = await engine.groups.get(group.group_id, user)
    assert back.status == "confirmed"
    assert back.confirmed_at_ms == max(h.confirmed_at_ms or 0 for h in confirmed.holds)
    assert [h.status for h in back.holds] == ["confirmed", "confirmed"]
    again = await engine.groups.confirm(group.group_id, user)
    assert not again.changed and again.group.status == "confirmed"


async def test_a_group_past_its_retention_is_not_brought_back(make_env: SyncEnvFactory) -> None:
    env = await make_env()
    engine = env.engine
    slots = _two_partitions(engine)
    user, group = await _make_group(env, slots)
    await engine.groups.cancel(group.group_id, user)
    await drain_all(engine, env.redis, env.pool)
    await _lose_and_rebuild(env, slots)
    assert (await engine.groups.get(group.group_id, user)).status == "cancelled"

    # Its cancel recorded longer ago than the retention: the rebuild leaves it out.
    await env.pool.execute(
        "ALTER TABLE group_events DISABLE TRIGGER group_events_append_only;"
        " UPDATE group_events SET occurred_at = occurred_at - interval '2 days',"
        " expires_at = expires_at - interval '2 days';"
        " ALTER TABLE group_events ENABLE TRIGGER group_events_append_only;"
        " UPDATE holds SET cancelled_at = cancelled_at - interval '2 days'"
    )
    await _lose_and_rebuild(env, slots)
    with pytest.raises(GroupNotFound):
        await engine.groups.get(group.group_id, user)
