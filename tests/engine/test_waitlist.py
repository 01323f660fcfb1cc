"""The waitlist on the real Redis: fair offers under load, offers that lapse down the line."""

from __future__ import annotations

import asyncio

import pytest

from engine import CapacityExhausted, Engine

from ..conftest import EngineFactory

pytestmark = pytest.mark.backends("redis")

T0 = 1_700_000_000_000


async def _fill(engine: Engine, slot_id: int, capacity: int) -> list[str]:
    await engine.create_slot(slot_id, capacity, now_ms=T0)
    holds = []
    for n in range(capacity):
        outcome = await engine.hold(slot_id, f"holder{n}", f"k{n}", now_ms=T0)
        holds.append(outcome.hold.hold_id)
    return holds


async def test_500_join_a_sold_out_slot_and_the_first_20_get_the_freed_units(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine(max_waiting_per_user_slot=1)
    holds = await _fill(engine, 7, 20)

    async def join(n: int) -> tuple[int, str]:
        entry, created = await engine.waitlist.join(7, f"w{n}", "join", now_ms=T0 + 1)
        assert created and entry.status == "waiting"
        return entry.seq, entry.entry_id

    joined = await asyncio.gather(*(join(n) for n in range(500)))
    by_order = [entry_id for _, entry_id in sorted(joined)]
    waiting = await engine.waitlist.waiting([7])
    assert (waiting[7].entries, waiting[7].units) == (500, 500)
    positions = [(await engine.waitlist.get(e)).position for e in by_order[:3]]
    assert positions == [1, 2, 3]
    assert (await engine.waitlist.get(by_order[-1])).position == 500

    for n, hold_id in enumerate(holds):
        await engine.cancel(hold_id, None, now_ms=T0 + 10 + n)
        offered = await engine.waitlist.get(by_order[n])
        assert offered.status == "offered" and offered.hold is not None
        assert offered.hold.status == "held" and offered.hold.hold_id == by_order[n]
        assert (await engine.waitlist.get(by_order[n + 1])).position == 1

    statuses = [(await engine.waitlist.get(e)).status for e in by_order]
    assert statuses == ["offered"] * 20 + ["waiting"] * 480
    slot = await engine.slot(7)
    assert (slot.capacity, slot.remaining, slot.held, slot.confirmed) == (20, 0, 20, 0)
    # Nobody overtakes the line with a plain hold.
    with pytest.raises(CapacityExhausted):
        await engine.hold(7, "newcomer", "k", now_ms=T0 + 100)


async def test_offers_nobody_confirms_move_down_the_line_by_the_sweep_alone(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine(partitions=1, hold_ttl_s=1, waitlist_offer_ttl_s=2)
    await _fill(engine, 3, 1)
    ids = []
    for n in range(5):
        entry, _ = await engine.waitlist.join(3, f"w{n}", "k", now_ms=T0 + n)
        ids.append(entry.entry_id)
    # Only the sweep runs: the first hold expires at T0+1000, each offer 2 s later.
    now = T0
    seen: list[str] = []
    while len(seen) < 5:
        now += 250
        assert now < T0 + 20_000, seen
        await engine.sweep(0, now_ms=now)
        for entry_id in ids:
            entry = await engine.waitlist.get(entry_id)
            if entry.status == "offered" and entry_id not in seen:
                seen.append(entry_id)
                assert entry.offered_at_ms is not None
    assert seen == ids
    now += 2_000
    await engine.sweep(0, now_ms=now)
    slot = await engine.slot(3)
    assert (slot.remaining, slot.held) == (1, 0)
    assert await engine.waitlist.waiting([3]) == {}
    offered = [await engine.waitlist.get(e) for e in ids]
    assert all(e.hold is not None and e.hold.status == "expired" for e in offered)


@pytest.mark.backends("redis", "cluster")
async def test_whole_quantity_or_wait_and_no_overtaking(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    holds = await _fill(engine, 5, 3)
    big, _ = await engine.waitlist.join(5, "big", "k", 2, now_ms=T0)
    small, _ = await engine.waitlist.join(5, "small", "k", 1, now_ms=T0)
    await engine.cancel(holds[0], None, now_ms=T0 + 1)
    assert (await engine.waitlist.get(big.entry_id)).status == "waiting"
    assert (await engine.waitlist.get(small.entry_id)).position == 2
    await engine.cancel(holds[1], None, now_ms=T0 + 2)
    assert (await engine.waitlist.get(big.entry_id)).status == "offered"
    assert (await engine.waitlist.get(small.entry_id)).position == 1
    left, changed = await engine.waitlist.leave(small.entry_id, "small", now_ms=T0 + 3)
    assert changed and left.status == "left"
    again, changed = await engine.waitlist.leave(small.entry_id, "small", now_ms=T0 + 4)
    assert not changed and again.status == "left"
    # An operator raising capacity offers at once; a join that fits is offered at once.
    third, _ = await engine.waitlist.join(5, "third", "k", 2, now_ms=T0 + 5)
    assert third.status == "waiting" and third.position == 1
    await engine.update_slot(5, capacity=5, now_ms=T0 + 6)
    assert (await engine.waitlist.get(third.entry_id)).status == "offered"
    slot = await engine.slot(5)
    assert (slot.capacity, slot.remaining, slot.held) == (5, 0, 5)


async def test_offers_per_call_are_bounded_and_the_sweep_continues(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine(partitions=1)
    await engine.create_slot(9, 0, now_ms=T0)
    ids = [(await engine.waitlist.join(9, f"w{n}", "k", now_ms=T0))[0].entry_id for n in range(40)]
    await engine.update_slot(9, capacity=40, now_ms=T0 + 1)  # 40 units free at once
    statuses = [(await engine.waitlist.get(e)).status for e in ids]
    assert statuses == ["offered"] * 32 + ["waiting"] * 8  # one call offers at most 32
    assert await engine.sweep(0, now_ms=T0 + 2) == (0, False)
    assert [(await engine.waitlist.get(e)).status for e in ids] == ["offered"] * 40
    slot = await engine.slot(9)
    assert (slot.remaining, slot.held) == (0, 40)
