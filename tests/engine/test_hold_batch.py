"""engine.batch.hold_many (lua/hold_batch.lua): each item judged as Engine.hold
judges one hold, in order, one script call per partition. Slots map to partition
``slot_id % 4``."""

from __future__ import annotations

from typing import Any

import pytest

from engine import Engine, EngineError, Outcome, StateUnavailable
from engine.batch import HoldItem

from ..conftest import EngineFactory

T0 = 1_700_000_000_000

# Slots 1 and 5 share partition 1, 2 is partition 2, 3 is closed, 9 (partition 1)
# does not exist; slot 6 has a customer waiting. The user cap is 3 units.
ITEMS = [
    HoldItem(1, "u1", "a", 2),
    HoldItem(2, "u1", "b", 1),
    HoldItem(1, "u2", "c", 4),  # 3 left: capacity
    HoldItem(5, "u1", "d", 3),
    HoldItem(5, "u1", "e", 1),  # u1 holds 3 on slot 5: user limit
    HoldItem(1, "u1", "a", 2),  # replays the first item
    HoldItem(1, "u1", "a", 1),  # same key, other quantity: mismatch
    HoldItem(3, "u1", "f", 1),  # closed
    HoldItem(9, "u1", "g", 1),  # not found
    HoldItem(6, "u3", "h", 1),  # someone waits: capacity 0
    HoldItem(1, "u3", "i", 3),  # the rest of slot 1
]


async def _setup(engine: Engine) -> None:
    for slot_id, capacity in [(1, 5), (2, 5), (5, 10), (6, 1)]:
        await engine.create_slot(slot_id, capacity, now_ms=T0)
    await engine.create_slot(3, 5, state="closed", now_ms=T0)
    await engine.hold(6, "u4", "take", 1, now_ms=T0)
    await engine.waitlist.join(6, "u5", "wait", 1, now_ms=T0)


def _shape(result: Outcome | EngineError) -> Any:
    """What must match between the two paths (hold ids are random)."""
    if isinstance(result, EngineError):
        return type(result).__name__, vars(result)
    h = result.hold
    return result.changed, h.slot_id, h.user_id, h.quantity, h.status, h.idempotency_key


@pytest.mark.backends()
async def test_a_batch_answers_as_single_holds_in_order(make_engine: EngineFactory) -> None:
    single = await make_engine(max_held_per_user_slot=3)
    batched = await make_engine(max_held_per_user_slot=3)
    await _setup(single)
    await _setup(batched)

    expected = []
    for i in ITEMS:
        try:
            expected.append(
                _shape(
                    await single.hold(
                        i.slot_id, i.user_id, i.idempotency_key, i.quantity, now_ms=T0 + 1
                    )
                )
            )
        except EngineError as exc:
            expected.append(_shape(exc))
    results = await batched.batch.hold_many(ITEMS, now_ms=T0 + 1)

    assert [_shape(r) for r in results] == expected
    assert [type(r).__name__ for r in results] == [
        "Outcome",
        "Outcome",
        "CapacityExhausted",
        "Outcome",
        "UserHoldLimit",
        "Outcome",
        "IdempotencyMismatch",
        "SlotClosed",
        "SlotNotFound",
        "CapacityExhausted",
        "Outcome",
    ]
    first, replay = results[0], results[5]
    assert isinstance(first, Outcome) and isinstance(replay, Outcome)
    assert replay.hold.hold_id == first.hold.hold_id and not replay.changed
    assert (await batched.slot(1)).remaining == 0
    for slot_id in (1, 2, 5, 6):
        assert await batched.slot(slot_id) == await single.slot(slot_id)
    for s in await batched.availability():
        assert s.capacity == s.remaining + s.held + s.confirmed, s

    # A replayed batch replays every hold it made.
    again = await batched.batch.hold_many(ITEMS, now_ms=T0 + 2)
    for before, after in zip(results, again, strict=True):
        if isinstance(before, Outcome):
            assert isinstance(after, Outcome) and not after.changed
            assert after.hold.hold_id == before.hold.hold_id


@pytest.mark.backends("redis")
async def test_a_partition_without_state_refuses_each_of_its_items(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    await engine.create_slot(2, 5, now_ms=T0)
    await engine.reset_partition(2)

    results = await engine.batch.hold_many(
        [HoldItem(2, "u1", "a"), HoldItem(1, "u1", "b"), HoldItem(6, "u1", "c")], now_ms=T0
    )

    assert isinstance(results[0], StateUnavailable) and isinstance(results[2], StateUnavailable)
    assert isinstance(results[1], Outcome) and results[1].changed


async def test_a_bad_item_sends_nothing(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    with pytest.raises(ValueError):
        await engine.batch.hold_many([HoldItem(1, "u1", "a"), HoldItem(1, "u1", "")], now_ms=T0)
    assert (await engine.slot(1)).remaining == 5
