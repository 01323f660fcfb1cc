"""Hold groups: all or nothing across slots (engine/groups.py), on real Redis and the cluster."""

from __future__ import annotations

import pytest

from engine import (
    CapacityExhausted,
    Engine,
    GroupCancelled,
    GroupExpired,
    GroupIdempotencyMismatch,
    GroupItem,
    GroupNotFound,
    GroupRefused,
    HoldInGroup,
    SlotClosed,
    SlotNotFound,
    UserHoldLimit,
)

from ..conftest import EngineFactory

pytestmark = pytest.mark.backends("redis", "cluster")

T0 = 1_900_000_000_000


async def slots(engine: Engine, *caps: int) -> list[int]:
    # Ids 1..n spread over the partitions (4 in tests): items on several nodes.
    for n, cap in enumerate(caps, start=1):
        await engine.create_slot(n, cap, now_ms=T0)
    return list(range(1, len(caps) + 1))


async def totals(engine: Engine, slot_id: int) -> tuple[int, int, int, int]:
    s = await engine.slot(slot_id)
    assert s.capacity == s.remaining + s.held + s.confirmed
    return s.capacity, s.remaining, s.held, s.confirmed


async def test_group_holds_every_item_with_one_expiry(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await slots(engine, 5, 5, 5)
    items = [GroupItem(1, 2), GroupItem(2), GroupItem(3, 3)]
    out = await engine.groups.hold("7", "k1", items, now_ms=T0)
    g = out.group
    assert out.changed and g.status == "held" and g.user_id == "7"
    assert g.expires_at_ms == T0 + 300_000
    assert [(h.slot_id, h.quantity, h.status) for h in g.holds] == [
        (1, 2, "held"),
        (2, 1, "held"),
        (3, 3, "held"),
    ]
    assert {h.expires_at_ms for h in g.holds} == {g.expires_at_ms}
    assert await totals(engine, 1) == (5, 3, 2, 0)
    assert await totals(engine, 3) == (5, 2, 3, 0)
    # A replay answers the same group; other items under the key are refused.
    again = await engine.groups.hold("7", "k1", items, now_ms=T0 + 5)
    assert not again.changed and again.group.group_id == g.group_id
    with pytest.raises(GroupIdempotencyMismatch):
        await engine.groups.hold("7", "k1", [GroupItem(1, 1)], now_ms=T0 + 5)
    assert await totals(engine, 1) == (5, 3, 2, 0)
    read = await engine.groups.get(g.group_id, "7", now_ms=T0 + 6)
    assert read.status == "held" and len(read.holds) == 3
    with pytest.raises(GroupNotFound):
        await engine.groups.get(g.group_id, "8", now_ms=T0 + 6)


@pytest.mark.parametrize(
    ("caps", "bad", "cause"),
    [
        ((5, 1, 5), 1, CapacityExhausted),
        ((5, 5, 0), 2, CapacityExhausted),
    ],
)
async def test_a_refused_item_holds_nothing(
    make_engine: EngineFactory, caps: tuple[int, ...], bad: int, cause: type
) -> None:
    engine = await make_engine()
    await slots(engine, *caps)
    items = [GroupItem(1, 1), GroupItem(2, 2), GroupItem(3, 1)]
    with pytest.raises(GroupRefused) as info:
        await engine.groups.hold("7", "k", items, now_ms=T0)
    assert info.value.index == bad and info.value.slot_id == bad + 1
    assert isinstance(info.value.cause, cause)
    for slot_id, cap in zip((1, 2, 3), caps, strict=True):
        assert await totals(engine, slot_id) == (cap, cap, 0, 0)
    # The key was not bound: the same key works once the capacity is there.
    await engine.update_slot(bad + 1, capacity=5, now_ms=T0 + 1)
    out = await engine.groups.hold("7", "k", items, now_ms=T0 + 2)
    assert out.changed and out.group.status == "held"


async def test_closed_unknown_and_user_cap_refuse(make_engine: EngineFactory) -> None:
    engine = await make_engine(max_held_per_user_slot=2)
    await slots(engine, 5, 5)
    await engine.update_slot(2, state="closed", now_ms=T0)
    with pytest.raises(GroupRefused) as closed:
        await engine.groups.hold("7", "a", [GroupItem(1), GroupItem(2)], now_ms=T0)
    assert isinstance(closed.value.cause, SlotClosed)
    with pytest.raises(GroupRefused) as unknown:
        await engine.groups.hold("7", "b", [GroupItem(1), GroupItem(99)], now_ms=T0)
    assert isinstance(unknown.value.cause, SlotNotFound) and unknown.value.index == 1
    with pytest.raises(GroupRefused) as cap:
        await engine.groups.hold("7", "c", [GroupItem(1, 3)], now_ms=T0)
    assert isinstance(cap.value.cause, UserHoldLimit)
    assert await totals(engine, 1) == (5, 5, 0, 0)
    with pytest.raises(ValueError, match="at most once"):
        await engine.groups.hold("7", "d", [GroupItem(1), GroupItem(1)], now_ms=T0)
    with pytest.raises(ValueError, match="1 to 10 items"):
        await engine.groups.hold("7", "d", [GroupItem(n) for n in range(1, 12)], now_ms=T0)


async def test_confirm_cancel_and_members(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await slots(engine, 5, 5)
    g = (await engine.groups.hold("7", "k", [GroupItem(1, 2), GroupItem(2)], now_ms=T0)).group
    member = g.holds[0].hold_id
    with pytest.raises(HoldInGroup):
        await engine.confirm(member, "7", now_ms=T0 + 1)
    with pytest.raises(HoldInGroup):
        await engine.cancel(member, None, now_ms=T0 + 1)
    with pytest.raises(GroupNotFound):
        await engine.groups.confirm(g.group_id, "8", now_ms=T0 + 1)
    done = await engine.groups.confirm(g.group_id, "7", now_ms=T0 + 2)
    assert done.changed and done.group.status == "confirmed"
    assert {h.status for h in done.group.holds} == {"confirmed"}
    assert await totals(engine, 1) == (5, 3, 0, 2)
    again = await engine.groups.confirm(g.group_id, "7", now_ms=T0 + 3)
    assert not again.changed and again.group.status == "confirmed"
    gone = await engine.groups.cancel(g.group_id, "7", now_ms=T0 + 4)
    assert gone.changed and gone.group.status == "cancelled"
    assert {h.status for h in gone.group.holds} == {"cancelled"}
    assert await totals(engine, 1) == (5, 5, 0, 0)
    assert not (await engine.groups.cancel(g.group_id, "7", now_ms=T0 + 5)).changed
    with pytest.raises(GroupCancelled):
        await engine.groups.confirm(g.group_id, "7", now_ms=T0 + 6)


async def test_expiry_releases_every_member(make_engine: EngineFactory) -> None:
    engine = await make_engine(hold_ttl_s=60, group_pending_ms=1000)
    await slots(engine, 5, 5)
    g = (await engine.groups.hold("7", "k", [GroupItem(1), GroupItem(2)], now_ms=T0)).group
    # Too close to the end (2 x the pending lifetime) to start a confirm: 410.
    with pytest.raises(GroupExpired):
        await engine.groups.confirm(g.group_id, "7", now_ms=T0 + 58_500)
    for p in range(4):
        await engine.sweep(p, now_ms=T0 + 60_000)
    assert (await engine.groups.get(g.group_id, None, now_ms=T0 + 60_000)).status == "expired"
    assert await totals(engine, 1) == (5, 5, 0, 0)
    assert await totals(engine, 2) == (5, 5, 0, 0)
    assert not (await engine.groups.cancel(g.group_id, "7", now_ms=T0 + 60_001)).changed


async def test_sweep_releases_a_half_made_group(make_engine: EngineFactory) -> None:
    """A process that made some parts and died: the sweep releases them after the
    pending lifetime (and its grace), and the key is free again."""
    engine = await make_engine(group_pending_ms=1000)
    await slots(engine, 5, 5)
    groups = engine.groups
    orig = groups._make  # the dead process: begin, one part, nothing else

    async def die(group, user_id, now_ms):  # type: ignore[no-untyped-def]
        await groups._make_part(group, group.members[0], user_id, str(T0 + 1000), now_ms)
        raise RuntimeError("killed")

    groups._make = die  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await groups.hold("7", "k", [GroupItem(1, 2), GroupItem(2)], now_ms=T0)
    groups._make = orig  # type: ignore[method-assign]
    assert await totals(engine, 1) == (5, 3, 2, 0)
    for p in range(4):
        assert await groups.sweep(p, now_ms=T0 + 1500) == 0  # deadline + grace not yet
    assert sum([await groups.sweep(p, now_ms=T0 + 2000) for p in range(4)]) == 1
    assert await totals(engine, 1) == (5, 5, 0, 0)
    out = await groups.hold("7", "k", [GroupItem(1, 2), GroupItem(2)], now_ms=T0 + 2001)
    assert out.changed


async def test_a_group_does_not_overtake_a_waiting_customer(make_engine: EngineFactory) -> None:
    """While anyone waits for a slot, what is left of it is the head of the line's:
    a group needing that slot is refused like a single hold, and nothing is held."""
    engine = await make_engine()
    a, b = await slots(engine, 2, 5)
    first = await engine.hold(a, "1", "k1", 1, now_ms=T0)
    await engine.hold(a, "1", "k2", 1, now_ms=T0)
    entry, _ = await engine.waitlist.join(a, "2", "w1", 2, now_ms=T0)
    assert entry.status == "waiting"
    await engine.cancel(first.hold.hold_id, "1", now_ms=T0 + 1)
    assert (await engine.slot(a)).remaining == 1  # the head needs 2: it keeps waiting
    with pytest.raises(GroupRefused) as refused:
        await engine.groups.hold("4", "g", [GroupItem(b), GroupItem(a)], now_ms=T0 + 2)
    assert (refused.value.index, refused.value.slot_id) == (1, a)
    assert await totals(engine, b) == (5, 5, 0, 0)
    assert (await engine.slot(a)).remaining == 1
