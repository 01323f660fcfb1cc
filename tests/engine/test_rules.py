"""Every rule of the hold life cycle and every refused transition, on each backend.

Time is always an explicit clock (``now_ms=``) except where a rule rests on Redis'
own key expiry (the idempotency memory). Slots map to partition ``slot_id % 4``.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from engine import (
    CapacityBelowCommitted,
    CapacityExhausted,
    Engine,
    HoldArchived,
    HoldCancelled,
    HoldExpired,
    HoldNotFound,
    IdempotencyMismatch,
    SlotClosed,
    SlotExists,
    SlotNotFound,
    UserHoldLimit,
)
from engine.models import Hold

from ..conftest import EngineFactory

T0 = 1_700_000_000_000
TTL_MS = 300_000  # EngineSettings.hold_ttl_s default, in ms


async def counters(engine: Engine, slot_id: int) -> tuple[int, int, int, int]:
    """(capacity, remaining, held, confirmed) as the engine reports them."""
    s = await engine.slot(slot_id)
    return s.capacity, s.remaining, s.held, s.confirmed


async def statuses(engine: Engine, holds: list[Hold]) -> list[str]:
    return [(await engine.get_hold(h.hold_id)).status for h in holds]


async def assert_invariant(engine: Engine) -> None:
    for s in await engine.availability():
        assert s.capacity == s.remaining + s.held + s.confirmed, s
        assert s.remaining >= 0, s


# -- capacity ------------------------------------------------------------------


@pytest.mark.backends()
async def test_hold_reserves_capacity_at_once(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)

    out = await engine.hold(1, "u1", "key-1", 2, now_ms=T0 + 7)

    assert out.changed
    h = out.hold
    assert (h.slot_id, h.user_id, h.quantity, h.status) == (1, "u1", 2, "held")
    assert (h.created_at_ms, h.expires_at_ms) == (T0 + 7, T0 + 7 + TTL_MS)
    # Redis does not keep the key on the hold (only the key's own record).
    assert (h.version, h.idempotency_key) == (1, "")
    assert h.confirmed_at_ms is h.cancelled_at_ms is h.expired_at_ms is None
    assert h.hold_id.startswith("1-")
    assert await engine.get_hold(h.hold_id) == h
    assert await counters(engine, 1) == (5, 3, 2, 0)
    await assert_invariant(engine)


@pytest.mark.backends()
async def test_capacity_exhausted_carries_remaining_and_never_goes_below_zero(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 3, now_ms=T0)

    await engine.hold(1, "u1", "a", 2, now_ms=T0)
    with pytest.raises(CapacityExhausted) as info:
        await engine.hold(1, "u2", "b", 2, now_ms=T0)
    assert (info.value.slot_id, info.value.remaining) == (1, 1)

    await engine.hold(1, "u2", "c", 1, now_ms=T0)
    for quantity in (1, 3):
        with pytest.raises(CapacityExhausted) as info:
            await engine.hold(1, "u3", f"d{quantity}", quantity, now_ms=T0)
        assert info.value.remaining == 0

    assert await counters(engine, 1) == (3, 0, 3, 0)
    await assert_invariant(engine)


@pytest.mark.backends()
async def test_zero_capacity_slot_takes_no_hold(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(2, 0, now_ms=T0)
    with pytest.raises(CapacityExhausted) as info:
        await engine.hold(2, "u1", "k", now_ms=T0)
    assert info.value.remaining == 0
    assert await counters(engine, 2) == (0, 0, 0, 0)


@pytest.mark.backends()
async def test_quantity_outside_one_to_max_is_refused_before_redis(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine(max_quantity=5, max_held_per_user_slot=5)
    await engine.create_slot(1, 10, now_ms=T0)
    for quantity in (0, -1, 6):
        with pytest.raises(ValueError):
            await engine.hold(1, "u1", f"k{quantity}", quantity, now_ms=T0)
    assert await counters(engine, 1) == (10, 10, 0, 0)

    assert (await engine.hold(1, "u1", "k", 5, now_ms=T0)).hold.quantity == 5
    assert await counters(engine, 1) == (10, 5, 5, 0)


# -- idempotency -----------------------------------------------------------------


@pytest.mark.backends()
async def test_replay_returns_the_same_hold_unchanged(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    first = await engine.hold(1, "u1", "k", 2, now_ms=T0)

    again = await engine.hold(1, "u1", "k", 2, now_ms=T0 + 1_000)

    assert not again.changed
    assert again.hold == first.hold
    assert await counters(engine, 1) == (5, 3, 2, 0)


@pytest.mark.backends()
async def test_replay_reports_the_current_status(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    first = (await engine.hold(1, "u1", "k", now_ms=T0)).hold

    await engine.confirm(first.hold_id, "u1", now_ms=T0 + 10)
    replay = await engine.hold(1, "u1", "k", now_ms=T0 + 20)
    assert not replay.changed
    assert (replay.hold.hold_id, replay.hold.status, replay.hold.version) == (
        first.hold_id,
        "confirmed",
        2,
    )

    await engine.cancel(first.hold_id, "u1", now_ms=T0 + 30)
    replay = await engine.hold(1, "u1", "k", now_ms=T0 + 40)
    assert (replay.hold.status, replay.hold.version, replay.changed) == ("cancelled", 3, False)
    # A replay never makes a second hold, whatever the first one became.
    assert await counters(engine, 1) == (5, 5, 0, 0)


@pytest.mark.backends()
async def test_replay_after_expiry_reports_expired(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    first = (await engine.hold(1, "u1", "k", 3, now_ms=T0)).hold

    replay = await engine.hold(1, "u1", "k", 3, now_ms=T0 + TTL_MS)

    assert not replay.changed
    assert replay.hold.hold_id == first.hold_id
    assert (replay.hold.status, replay.hold.expired_at_ms) == ("expired", T0 + TTL_MS)
    assert await counters(engine, 1) == (5, 5, 0, 0)


@pytest.mark.backends()
async def test_replay_of_a_due_hold_beyond_the_batch_reports_it_expired(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine(housekeeping_batch=1)
    await engine.create_slot(1, 10, now_ms=T0)
    for i in range(3):
        await engine.hold(1, f"u{i}", "k", now_ms=T0 + i)

    # Housekeeping expires u0's hold only (batch 1); u2's is due as well.
    replay = await engine.hold(1, "u2", "k", now_ms=T0 + TTL_MS + 10)

    assert replay.hold.expires_at_ms <= T0 + TTL_MS + 10
    assert replay.hold.status == "expired"
    assert (await engine.slot(1)).held == 1


@pytest.mark.backends()
async def test_same_key_with_another_quantity_is_a_mismatch(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    first = (await engine.hold(1, "u1", "k", 1, now_ms=T0)).hold

    with pytest.raises(IdempotencyMismatch) as info:
        await engine.hold(1, "u1", "k", 2, now_ms=T0 + 1)
    assert (info.value.slot_id, info.value.quantity) == (1, 1)

    assert await counters(engine, 1) == (5, 4, 1, 0)
    assert await engine.get_hold(first.hold_id) == first
    # The key still names the first hold.
    assert (await engine.hold(1, "u1", "k", 1, now_ms=T0 + 2)).hold == first


@pytest.mark.backends()
async def test_key_is_scoped_to_user_and_slot(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    await engine.create_slot(5, 5, now_ms=T0)  # same partition as slot 1
    await engine.create_slot(2, 5, now_ms=T0)

    mine = await engine.hold(1, "u1", "same", now_ms=T0)
    theirs = await engine.hold(1, "u2", "same", now_ms=T0)
    other_slot = await engine.hold(5, "u1", "same", now_ms=T0)
    other_partition = await engine.hold(2, "u1", "same", now_ms=T0)

    outcomes = [mine, theirs, other_slot, other_partition]
    assert all(o.changed for o in outcomes)
    assert len({o.hold.hold_id for o in outcomes}) == 4
    assert theirs.hold.user_id == "u2"
    assert [o.hold.slot_id for o in outcomes] == [1, 1, 5, 2]
    assert await counters(engine, 1) == (5, 3, 2, 0)
    assert await counters(engine, 5) == (5, 4, 1, 0)
    assert await counters(engine, 2) == (5, 4, 1, 0)


@pytest.mark.backends()
async def test_user_ids_cannot_confuse_key_scopes(make_engine: EngineFactory) -> None:
    # ':' separates the parts of an idempotency record: user 'a:b' with key 'c'
    # and user 'a' with key 'b:c' would share one. Such user ids are refused.
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    with pytest.raises(ValueError):
        await engine.hold(1, "a:b", "c", now_ms=T0)
    held = await engine.hold(1, "a", "b:c", now_ms=T0)
    assert held.changed and held.hold.user_id == "a"
    with pytest.raises(ValueError):
        await engine.hold(1, "", "k", now_ms=T0)


@pytest.mark.backends()
@pytest.mark.parametrize("refusal", ["capacity", "closed", "user_limit", "unknown_slot"])
async def test_refused_hold_does_not_bind_the_key(make_engine: EngineFactory, refusal: str) -> None:
    engine = await make_engine(max_held_per_user_slot=2)
    capacity = 2 if refusal == "capacity" else 4
    blocker = None
    if refusal != "unknown_slot":
        await engine.create_slot(1, capacity, now_ms=T0)
    if refusal == "capacity":
        blocker = (await engine.hold(1, "u2", "b", 2, now_ms=T0)).hold
    elif refusal == "closed":
        await engine.update_slot(1, state="closed", now_ms=T0)
    elif refusal == "user_limit":
        blocker = (await engine.hold(1, "u1", "b", 2, now_ms=T0)).hold
    expected = {
        "capacity": CapacityExhausted,
        "closed": SlotClosed,
        "user_limit": UserHoldLimit,
        "unknown_slot": SlotNotFound,
    }[refusal]

    # Refused with quantity 2: a bound key would later refuse quantity 1 as a mismatch.
    with pytest.raises(expected):
        await engine.hold(1, "u1", "retry-me", 2, now_ms=T0 + 1)

    if refusal == "unknown_slot":
        await engine.create_slot(1, capacity, now_ms=T0 + 2)
    elif refusal == "closed":
        await engine.update_slot(1, state="open", now_ms=T0 + 2)
    else:
        assert blocker is not None
        await engine.cancel(blocker.hold_id, blocker.user_id, now_ms=T0 + 2)

    retry = await engine.hold(1, "u1", "retry-me", 1, now_ms=T0 + 3)
    assert retry.changed
    assert (retry.hold.quantity, retry.hold.status) == (1, "held")
    assert await counters(engine, 1) == (capacity, capacity - 1, 1, 0)


@pytest.mark.backends()
async def test_idempotency_memory_ends_after_its_ttl(make_engine: EngineFactory) -> None:
    # The memory is a Redis key TTL (PX), so this one rule runs on real time.
    engine = await make_engine(idempotency_ttl_s=1)
    await engine.create_slot(1, 5, now_ms=T0)
    first = (await engine.hold(1, "u1", "k", now_ms=T0)).hold
    assert (await engine.hold(1, "u1", "k", now_ms=T0 + 1)).hold == first

    await asyncio.sleep(1.1)

    second = await engine.hold(1, "u1", "k", 2, now_ms=T0 + 2)
    assert second.changed
    assert second.hold.hold_id != first.hold_id
    assert (await engine.get_hold(first.hold_id)).status == "held"
    assert await counters(engine, 1) == (5, 2, 3, 0)


# -- per-(user, slot) cap ----------------------------------------------------------


@pytest.mark.backends()
async def test_user_hold_limit_per_user_and_slot(make_engine: EngineFactory) -> None:
    engine = await make_engine(max_held_per_user_slot=3)
    await engine.create_slot(1, 20, now_ms=T0)
    await engine.create_slot(5, 20, now_ms=T0)

    await engine.hold(1, "u1", "a", 2, now_ms=T0)
    await engine.hold(1, "u1", "b", 1, now_ms=T0)
    with pytest.raises(UserHoldLimit) as info:
        await engine.hold(1, "u1", "c", 1, now_ms=T0)
    assert (info.value.slot_id, info.value.held, info.value.limit) == (1, 3, 3)

    # Another user on the slot, and the same user on another slot, are not limited.
    await engine.hold(1, "u2", "a", 3, now_ms=T0)
    await engine.hold(5, "u1", "a", 3, now_ms=T0)
    # One request above the cap is refused even with nothing held.
    with pytest.raises(UserHoldLimit) as info:
        await engine.hold(1, "u3", "a", 4, now_ms=T0)
    assert info.value.held == 0
    assert await counters(engine, 1) == (20, 14, 6, 0)


@pytest.mark.backends()
async def test_confirm_cancel_and_expiry_free_room_under_the_cap(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine(max_held_per_user_slot=2)
    await engine.create_slot(1, 20, now_ms=T0)
    h1 = (await engine.hold(1, "u1", "k1", now_ms=T0)).hold
    h2 = (await engine.hold(1, "u1", "k2", now_ms=T0)).hold
    with pytest.raises(UserHoldLimit):
        await engine.hold(1, "u1", "k3", now_ms=T0)

    # Confirmed units are bookings, no longer held: they leave the cap.
    await engine.confirm(h1.hold_id, "u1", now_ms=T0 + 1)
    h3 = (await engine.hold(1, "u1", "k3", now_ms=T0 + 2)).hold
    with pytest.raises(UserHoldLimit):
        await engine.hold(1, "u1", "k4", now_ms=T0 + 2)

    await engine.cancel(h2.hold_id, "u1", now_ms=T0 + 3)
    await engine.hold(1, "u1", "k4", now_ms=T0 + 4)
    with pytest.raises(UserHoldLimit):
        await engine.hold(1, "u1", "k5", now_ms=T0 + 4)

    # Expiry frees it too (h3 was made at T0 + 2, k4 at T0 + 4).
    await engine.hold(1, "u1", "k5", now_ms=h3.expires_at_ms)
    with pytest.raises(UserHoldLimit):
        await engine.hold(1, "u1", "k6", now_ms=h3.expires_at_ms)
    assert await counters(engine, 1) == (20, 17, 2, 1)


# -- closed and unknown slots --------------------------------------------------------


@pytest.mark.backends()
async def test_closed_slot_refuses_holds_but_settles_existing_ones(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    h1 = (await engine.hold(1, "u1", "k1", now_ms=T0)).hold
    h2 = (await engine.hold(1, "u2", "k2", 2, now_ms=T0)).hold

    closed = await engine.update_slot(1, state="closed", now_ms=T0 + 1)
    assert closed.state == "closed"
    with pytest.raises(SlotClosed) as info:
        await engine.hold(1, "u3", "k3", now_ms=T0 + 2)
    assert info.value.slot_id == 1
    # A key already used answers with its hold, closed or not.
    assert (await engine.hold(1, "u1", "k1", now_ms=T0 + 2)).hold == h1

    assert (await engine.confirm(h1.hold_id, "u1", now_ms=T0 + 3)).hold.status == "confirmed"
    assert (await engine.cancel(h2.hold_id, "u2", now_ms=T0 + 3)).hold.status == "cancelled"
    assert await counters(engine, 1) == (5, 4, 0, 1)

    await engine.update_slot(1, state="open", now_ms=T0 + 4)
    assert (await engine.hold(1, "u3", "k3", now_ms=T0 + 5)).changed


@pytest.mark.backends()
async def test_slot_created_closed_takes_no_hold(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    created = await engine.create_slot(3, 5, state="closed", now_ms=T0)
    assert (created.state, created.remaining) == ("closed", 5)
    with pytest.raises(SlotClosed):
        await engine.hold(3, "u1", "k", now_ms=T0)


@pytest.mark.backends()
async def test_unknown_slot(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    for slot_id in (2, 5, 999):
        with pytest.raises(SlotNotFound) as info:
            await engine.hold(slot_id, "u1", "k", now_ms=T0)
        assert info.value.slot_id == slot_id
        with pytest.raises(SlotNotFound):
            await engine.slot(slot_id)
        with pytest.raises(SlotNotFound):
            await engine.update_slot(slot_id, capacity=3, now_ms=T0)
    assert [s.slot_id for s in await engine.availability()] == [1]


@pytest.mark.backends()
async def test_slot_ids_outside_the_routable_range_are_refused(
    make_engine: EngineFactory,
) -> None:
    # Hold ids encode the slot; an id slot_of_hold() cannot route would strand its holds.
    engine = await make_engine()
    for bad in (0, -3, 2**63):
        with pytest.raises(ValueError):
            await engine.create_slot(bad, 2, now_ms=T0)
        with pytest.raises(ValueError):
            await engine.hold(bad, "u1", "k", now_ms=T0)
    await engine.create_slot(2**63 - 1, 2, now_ms=T0)
    held = (await engine.hold(2**63 - 1, "u1", "k", now_ms=T0)).hold
    assert (await engine.confirm(held.hold_id, "u1", now_ms=T0)).hold.status == "confirmed"


# -- slot administration ----------------------------------------------------------


@pytest.mark.backends()
async def test_create_twice_is_refused_and_changes_nothing(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    created = await engine.create_slot(
        1, 5, attributes={"label": "gate A", "starts_at": "2030-01-01T10:00:00+00:00"}, now_ms=T0
    )
    assert (created.capacity, created.remaining, created.held, created.confirmed) == (5, 5, 0, 0)
    assert (created.state, created.label) == ("open", "gate A")
    await engine.hold(1, "u1", "k", now_ms=T0)

    with pytest.raises(SlotExists) as info:
        await engine.create_slot(1, 50, state="closed", now_ms=T0)
    assert info.value.slot_id == 1

    slot = await engine.slot(1)
    assert (slot.capacity, slot.remaining, slot.held, slot.state, slot.label) == (
        5,
        4,
        1,
        "open",
        "gate A",
    )


@pytest.mark.backends()
async def test_update_changes_only_what_is_given(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, attributes={"label": "A"}, now_ms=T0)
    await engine.hold(1, "u1", "k", 2, now_ms=T0)

    raised = await engine.update_slot(1, capacity=8, now_ms=T0)
    assert (raised.capacity, raised.remaining, raised.held, raised.label) == (8, 6, 2, "A")
    closed = await engine.update_slot(1, state="closed", now_ms=T0)
    assert (closed.capacity, closed.state, closed.label) == (8, "closed", "A")
    relabelled = await engine.update_slot(
        1, attributes={"ends_at": "2030-01-01T11:00:00Z"}, now_ms=T0
    )
    assert (relabelled.label, relabelled.ends_at, relabelled.state) == (
        None,
        "2030-01-01T11:00:00Z",
        "closed",
    )
    assert await engine.slot(1) == relabelled


@pytest.mark.backends()
async def test_lowering_capacity_below_held_plus_confirmed_is_refused(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, attributes={"label": "A"}, now_ms=T0)
    booked = (await engine.hold(1, "u1", "a", 2, now_ms=T0)).hold
    await engine.confirm(booked.hold_id, "u1", now_ms=T0)
    await engine.hold(1, "u2", "b", 1, now_ms=T0)
    before = await engine.slot(1)

    for capacity in (2, 0):
        with pytest.raises(CapacityBelowCommitted) as info:
            await engine.update_slot(1, capacity=capacity, state="closed", now_ms=T0 + 1)
        assert (info.value.slot_id, info.value.committed) == (1, 3)
        assert await engine.slot(1) == before  # nothing changed, state included

    exact = await engine.update_slot(1, capacity=3, now_ms=T0 + 2)
    assert (exact.capacity, exact.remaining, exact.held, exact.confirmed) == (3, 0, 1, 2)
    with pytest.raises(CapacityExhausted) as full:
        await engine.hold(1, "u3", "c", now_ms=T0 + 3)
    assert full.value.remaining == 0

    assert (await engine.update_slot(1, capacity=4, now_ms=T0 + 4)).remaining == 1
    await assert_invariant(engine)


@pytest.mark.backends()
async def test_lowering_capacity_counts_due_holds_as_released(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    await engine.hold(1, "u1", "a", 3, now_ms=T0)
    with pytest.raises(CapacityBelowCommitted):
        await engine.update_slot(1, capacity=2, now_ms=T0 + TTL_MS - 1)

    # The command expires the due hold first, so nothing is committed any more.
    lowered = await engine.update_slot(1, capacity=0, now_ms=T0 + TTL_MS)
    assert (lowered.capacity, lowered.remaining, lowered.held) == (0, 0, 0)


# -- confirm -----------------------------------------------------------------------


@pytest.mark.backends()
async def test_confirm_turns_a_live_hold_into_a_booking(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    held = (await engine.hold(1, "u1", "k", 2, now_ms=T0)).hold

    out = await engine.confirm(held.hold_id, "u1", now_ms=held.expires_at_ms - 1)

    assert out.changed
    assert (out.hold.status, out.hold.version) == ("confirmed", 2)
    assert out.hold.confirmed_at_ms == held.expires_at_ms - 1
    assert (out.hold.created_at_ms, out.hold.expires_at_ms) == (
        held.created_at_ms,
        held.expires_at_ms,
    )
    assert await engine.get_hold(held.hold_id) == out.hold
    assert await counters(engine, 1) == (5, 3, 0, 2)
    # A booking does not expire.
    assert await engine.sweep(1, now_ms=held.expires_at_ms + TTL_MS) == (0, 0)
    assert (await engine.get_hold(held.hold_id)).status == "confirmed"


@pytest.mark.backends()
@pytest.mark.parametrize("swept_first", [False, True], ids=["due", "beyond-batch"])
async def test_confirm_of_a_due_hold_is_expired_and_capacity_is_back(
    make_engine: EngineFactory, swept_first: bool
) -> None:
    engine = await make_engine(housekeeping_batch=1)
    await engine.create_slot(1, 5, now_ms=T0)
    if swept_first:
        # An earlier due hold takes the one housekeeping expiry of the call, so
        # the confirmed hold is still stored as 'held' when the script loads it.
        await engine.hold(1, "u0", "k", now_ms=T0 - 1)
    held = (await engine.hold(1, "u1", "k", 2, now_ms=T0)).hold
    now = held.expires_at_ms  # expires_at itself is already too late

    with pytest.raises(HoldExpired) as info:
        await engine.confirm(held.hold_id, "u1", now_ms=now)

    expired = info.value.hold
    assert (expired.hold_id, expired.status, expired.expired_at_ms) == (
        held.hold_id,
        "expired",
        now,
    )
    assert expired.version == 2
    assert expired.confirmed_at_ms is None
    assert await engine.get_hold(held.hold_id) == expired
    assert await counters(engine, 1) == (5, 5, 0, 0)
    # Confirming it again answers the same.
    with pytest.raises(HoldExpired) as again:
        await engine.confirm(held.hold_id, "u1", now_ms=now + 1)
    assert again.value.hold == expired


@pytest.mark.backends()
async def test_confirm_twice_answers_the_same_booking(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    held = (await engine.hold(1, "u1", "k", now_ms=T0)).hold
    first = await engine.confirm(held.hold_id, "u1", now_ms=T0 + 1)

    second = await engine.confirm(held.hold_id, "u1", now_ms=T0 + 2)
    # Even after the hold's own expiry time: a booking is not a hold any more.
    third = await engine.confirm(held.hold_id, "u1", now_ms=held.expires_at_ms + 1)

    assert not second.changed and not third.changed
    assert second.hold == first.hold == third.hold
    assert await counters(engine, 1) == (5, 4, 0, 1)


@pytest.mark.backends()
async def test_confirm_of_a_cancelled_hold_is_refused(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    held = (await engine.hold(1, "u1", "k", now_ms=T0)).hold
    cancelled = (await engine.cancel(held.hold_id, "u1", now_ms=T0 + 1)).hold

    with pytest.raises(HoldCancelled) as info:
        await engine.confirm(held.hold_id, "u1", now_ms=T0 + 2)

    assert info.value.hold == cancelled
    assert await engine.get_hold(held.hold_id) == cancelled
    assert await counters(engine, 1) == (5, 5, 0, 0)


# -- cancel ------------------------------------------------------------------------


@pytest.mark.backends()
async def test_cancel_of_a_held_hold_gives_its_quantity_back(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    held = (await engine.hold(1, "u1", "k", 3, now_ms=T0)).hold

    out = await engine.cancel(held.hold_id, "u1", now_ms=T0 + 5)

    assert out.changed
    assert (out.hold.status, out.hold.cancelled_at_ms, out.hold.version) == (
        "cancelled",
        T0 + 5,
        2,
    )
    assert await counters(engine, 1) == (5, 5, 0, 0)
    # Nothing is left to expire.
    assert await engine.sweep(1, now_ms=held.expires_at_ms) == (0, 0)


@pytest.mark.backends()
async def test_cancel_of_a_booking_gives_its_quantity_back(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    held = (await engine.hold(1, "u1", "k", 3, now_ms=T0)).hold
    await engine.confirm(held.hold_id, "u1", now_ms=T0 + 1)

    out = await engine.cancel(held.hold_id, "u1", now_ms=T0 + 2)

    assert out.changed
    h = out.hold
    assert (h.status, h.version, h.confirmed_at_ms, h.cancelled_at_ms) == (
        "cancelled",
        3,
        T0 + 1,
        T0 + 2,
    )
    assert await counters(engine, 1) == (5, 5, 0, 0)


@pytest.mark.backends()
async def test_cancel_twice_answers_the_same_hold(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    held = (await engine.hold(1, "u1", "k", 2, now_ms=T0)).hold
    first = await engine.cancel(held.hold_id, "u1", now_ms=T0 + 1)

    second = await engine.cancel(held.hold_id, "u1", now_ms=T0 + 2)

    assert not second.changed
    assert second.hold == first.hold
    assert await counters(engine, 1) == (5, 5, 0, 0)


@pytest.mark.backends()
@pytest.mark.parametrize("swept_first", [False, True], ids=["due", "already-expired"])
async def test_cancel_of_an_expired_hold_releases_nothing(
    make_engine: EngineFactory, swept_first: bool
) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    held = (await engine.hold(1, "u1", "k", 2, now_ms=T0)).hold
    due = held.expires_at_ms + 10
    if swept_first:
        assert await engine.sweep(1, now_ms=due) == (1, 0)

    out = await engine.cancel(held.hold_id, "u1", now_ms=due + 5)

    assert not out.changed
    expired_at = due if swept_first else due + 5  # the cancel itself expired it
    assert (out.hold.status, out.hold.version, out.hold.expired_at_ms) == (
        "expired",
        2,
        expired_at,
    )
    assert out.hold.cancelled_at_ms is None
    assert await counters(engine, 1) == (5, 5, 0, 0)
    assert (await engine.cancel(held.hold_id, "u1", now_ms=due + 6)).hold == out.hold


# -- ownership and ids ---------------------------------------------------------------


@pytest.mark.backends()
async def test_another_users_hold_is_not_found_and_untouched(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    held = (await engine.hold(1, "owner", "k", now_ms=T0)).hold

    for command in (engine.confirm, engine.cancel):
        with pytest.raises(HoldNotFound) as info:
            await command(held.hold_id, "intruder", now_ms=T0 + 1)
        assert info.value.hold_id == held.hold_id
    assert await engine.get_hold(held.hold_id) == held
    assert await counters(engine, 1) == (5, 4, 1, 0)

    # Booked or not, the intruder still cannot cancel it.
    await engine.confirm(held.hold_id, "owner", now_ms=T0 + 2)
    with pytest.raises(HoldNotFound):
        await engine.cancel(held.hold_id, "intruder", now_ms=T0 + 3)
    assert (await engine.get_hold(held.hold_id)).status == "confirmed"


@pytest.mark.backends()
async def test_operator_may_confirm_and_cancel_any_hold(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    a = (await engine.hold(1, "u1", "k", now_ms=T0)).hold
    b = (await engine.hold(1, "u2", "k", 2, now_ms=T0)).hold

    assert (await engine.confirm(a.hold_id, None, now_ms=T0 + 1)).hold.status == "confirmed"
    assert (await engine.cancel(a.hold_id, None, now_ms=T0 + 2)).hold.status == "cancelled"
    out = await engine.cancel(b.hold_id, None, now_ms=T0 + 3)
    assert (out.hold.status, out.hold.user_id) == ("cancelled", "u2")
    assert await counters(engine, 1) == (5, 5, 0, 0)


@pytest.mark.backends()
async def test_empty_user_id_is_not_the_operator(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    victim = (await engine.hold(1, "victim", "k", now_ms=T0)).hold

    with pytest.raises(ValueError):
        await engine.cancel(victim.hold_id, "", now_ms=T0 + 1)
    with pytest.raises(ValueError):
        await engine.confirm(victim.hold_id, "", now_ms=T0 + 1)
    assert (await engine.get_hold(victim.hold_id)).status == "held"


MALFORMED_IDS = [
    "",
    "nonsense",
    "1",
    "1-",
    "-1-0123456789abcdef",
    "1-0123456789ABCDEF",
    "1-0123456789abcde",
    "1-0123456789abcdef0",
    "1-0123456789abcdeg",
    "x1-0123456789abcdef",
    "\u0661-0123456789abcdef",  # an Arabic-Indic digit one
    "12345678901234567890-0123456789abcdef",
    "1 -0123456789abcdef",
]


@pytest.mark.backends()
async def test_malformed_and_unknown_hold_ids_are_not_found(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    real = (await engine.hold(1, "u1", "k", now_ms=T0)).hold
    token = real.hold_id.split("-", 1)[1]
    well_formed_unknown = [
        "1-0123456789abcdef",
        f"5-{token}",  # the real token under another slot of the same partition
        f"01-{token}",
        f"2-{token}",
    ]

    for hold_id in [*MALFORMED_IDS, *well_formed_unknown]:
        for user in ("u1", None):
            for command in (engine.confirm, engine.cancel):
                with pytest.raises(HoldNotFound):
                    await command(hold_id, user, now_ms=T0 + 1)
        with pytest.raises(HoldNotFound):
            await engine.get_hold(hold_id)
    assert await engine.get_hold(real.hold_id) == real
    assert await counters(engine, 1) == (5, 4, 1, 0)


# -- housekeeping ----------------------------------------------------------------


HOUSEKEEPING_COMMANDS = [
    "hold",
    "refused_hold",
    "hold_unknown_slot",
    "confirm",
    "cancel",
    "confirm_unknown",
    "create_slot",
    "update_slot",
]


@pytest.mark.backends()
@pytest.mark.parametrize("command", HOUSEKEEPING_COMMANDS)
async def test_each_command_expires_at_most_a_batch_of_its_partition(
    make_engine: EngineFactory, command: str
) -> None:
    batch = 3
    engine = await make_engine(housekeeping_batch=batch, max_held_per_user_slot=50)
    for slot_id in (1, 5, 2):  # 1 and 5 share partition 1; 2 is elsewhere
        await engine.create_slot(slot_id, 20, now_ms=T0)
    due = [(await engine.hold(1, f"u{i}", "k", now_ms=T0 + i)).hold for i in range(10)]
    elsewhere = [(await engine.hold(2, f"u{i}", "k", now_ms=T0 + i)).hold for i in range(5)]
    live = (await engine.hold(5, "owner", "k", now_ms=T0 + 60_000)).hold
    now = T0 + TTL_MS + 1_000  # every hold on slots 1 and 2 is due, `live` is not

    match command:
        case "hold":
            await engine.hold(5, "someone", "k", now_ms=now)
        case "refused_hold":
            with pytest.raises(CapacityExhausted):
                await engine.hold(5, "someone", "k", 40, now_ms=now)
        case "hold_unknown_slot":
            with pytest.raises(SlotNotFound):
                await engine.hold(13, "someone", "k", now_ms=now)
        case "confirm":
            await engine.confirm(live.hold_id, "owner", now_ms=now)
        case "cancel":
            await engine.cancel(live.hold_id, "owner", now_ms=now)
        case "confirm_unknown":
            with pytest.raises(HoldNotFound):
                await engine.confirm("5-0123456789abcdef", None, now_ms=now)
        case "create_slot":
            await engine.create_slot(9, 1, now_ms=now)
        case "update_slot":
            await engine.update_slot(5, attributes={"label": "x"}, now_ms=now)

    # Earliest expiry first, exactly one batch.
    assert await statuses(engine, due) == ["expired"] * batch + ["held"] * (len(due) - batch)
    assert (await engine.slot(1)).held == len(due) - batch
    assert await statuses(engine, elsewhere) == ["held"] * len(elsewhere)
    assert (await engine.slot(2)).held == len(elsewhere)
    await assert_invariant(engine)


@pytest.mark.backends()
async def test_sweep_reports_expired_and_still_due_and_drains(make_engine: EngineFactory) -> None:
    engine = await make_engine(housekeeping_batch=3, max_held_per_user_slot=50)
    await engine.create_slot(1, 30, now_ms=T0)
    await engine.create_slot(2, 30, now_ms=T0)
    due = [(await engine.hold(1, f"u{i}", "k", now_ms=T0 + i)).hold for i in range(7)]
    later = [(await engine.hold(1, f"v{i}", "k", now_ms=T0 + 50_000)).hold for i in range(2)]
    await engine.hold(2, "w", "k", now_ms=T0)
    now = T0 + TTL_MS + 100

    results = [await engine.sweep(1, now_ms=now) for _ in range(4)]

    # (expired, more are due): the queue's head tells whether to call again.
    assert results == [(3, True), (3, True), (1, False), (0, False)]
    assert await statuses(engine, due) == ["expired"] * len(due)
    assert {(await engine.get_hold(h.hold_id)).expired_at_ms for h in due} == {now}
    assert await statuses(engine, later) == ["held"] * len(later)
    assert await counters(engine, 1) == (30, 28, 2, 0)
    # Other partitions are not swept by it.
    assert (await engine.slot(2)).held == 1
    assert await engine.sweep(2, now_ms=now) == (1, 0)
    # Sweeping an empty partition is harmless.
    assert await engine.sweep(0, now_ms=now) == (0, 0)


# -- retention -------------------------------------------------------------------


@pytest.mark.backends()
async def test_finished_holds_are_forgotten_after_retention(make_engine: EngineFactory) -> None:
    engine = await make_engine(hold_ttl_s=10, finished_retention_s=60)
    retention = 60_000
    await engine.create_slot(1, 10, now_ms=T0)
    cancelled = (await engine.hold(1, "u1", "k1", now_ms=T0)).hold
    expired = (await engine.hold(1, "u2", "k2", now_ms=T0)).hold
    booked = (await engine.hold(1, "u3", "k3", now_ms=T0)).hold
    rebooked = (await engine.hold(1, "u4", "k4", now_ms=T0)).hold
    await engine.cancel(cancelled.hold_id, "u1", now_ms=T0 + 1_000)
    await engine.confirm(booked.hold_id, "u3", now_ms=T0 + 1_000)
    await engine.confirm(rebooked.hold_id, "u4", now_ms=T0 + 1_000)
    await engine.cancel(rebooked.hold_id, "u4", now_ms=T0 + 2_000)
    assert await engine.sweep(1, now_ms=T0 + 10_000) == (1, 0)  # `expired` finishes here

    await engine.sweep(1, now_ms=T0 + 1_000 + retention - 1)
    assert (await engine.get_hold(cancelled.hold_id)).status == "cancelled"

    await engine.sweep(1, now_ms=T0 + 1_000 + retention)
    with pytest.raises(HoldNotFound):
        await engine.get_hold(cancelled.hold_id)
    for command in (engine.confirm, engine.cancel):
        with pytest.raises(HoldNotFound):
            await command(cancelled.hold_id, "u1", now_ms=T0 + 1_000 + retention)
    # The idempotency memory (a day) outlives the hold: the key is not reusable.
    with pytest.raises(HoldArchived) as info:
        await engine.hold(1, "u1", "k1", now_ms=T0 + 1_000 + retention)
    assert info.value.hold_id == cancelled.hold_id
    with pytest.raises(IdempotencyMismatch):
        await engine.hold(1, "u1", "k1", 2, now_ms=T0 + 1_000 + retention)

    assert (await engine.get_hold(rebooked.hold_id)).status == "cancelled"
    await engine.sweep(1, now_ms=T0 + 2_000 + retention)
    with pytest.raises(HoldNotFound):
        await engine.get_hold(rebooked.hold_id)
    assert (await engine.get_hold(expired.hold_id)).status == "expired"
    await engine.sweep(1, now_ms=T0 + 10_000 + retention)
    with pytest.raises(HoldNotFound):
        await engine.get_hold(expired.hold_id)

    # A booking is live state: never forgotten, and forgetting moved no counter.
    much_later = T0 + 100 * retention
    await engine.sweep(1, now_ms=much_later)
    assert (await engine.get_hold(booked.hold_id)).status == "confirmed"
    assert await counters(engine, 1) == (10, 9, 0, 1)


@pytest.mark.backends()
async def test_forgetting_is_bounded_by_the_batch(make_engine: EngineFactory) -> None:
    engine = await make_engine(housekeeping_batch=2, finished_retention_s=1)
    await engine.create_slot(1, 10, now_ms=T0)
    holds = [(await engine.hold(1, f"u{i}", "k", now_ms=T0)).hold for i in range(5)]
    for h in holds:
        await engine.cancel(h.hold_id, h.user_id, now_ms=T0 + 1)

    async def kept() -> int:
        n = 0
        for h in holds:
            try:
                await engine.get_hold(h.hold_id)
            except HoldNotFound:
                continue
            n += 1
        return n

    later = T0 + 10_000
    assert await kept() == 5
    await engine.sweep(1, now_ms=later)
    assert await kept() == 3
    # Commands of the partition leave forgetting to the sweep (lua/expire.lua).
    await engine.create_slot(5, 1, now_ms=later)
    await engine.hold(5, "u9", "k", now_ms=later)
    assert await kept() == 3
    assert await engine.sweep(1, now_ms=later) == (0, True)  # one more is due
    assert await kept() == 1
    assert await engine.sweep(1, now_ms=later) == (0, False)
    assert await kept() == 0


# -- versions and the invariant --------------------------------------------------


@pytest.mark.backends()
async def test_version_grows_by_one_per_transition_only(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    a = (await engine.hold(1, "u1", "a", now_ms=T0)).hold
    b = (await engine.hold(1, "u1", "b", now_ms=T0)).hold
    assert (a.version, b.version) == (1, 1)

    async def version(hold: Hold) -> int:
        return (await engine.get_hold(hold.hold_id)).version

    await engine.hold(1, "u1", "a", now_ms=T0 + 1)  # replay
    with pytest.raises(IdempotencyMismatch):
        await engine.hold(1, "u1", "a", 2, now_ms=T0 + 1)
    with pytest.raises(HoldNotFound):
        await engine.confirm(a.hold_id, "u2", now_ms=T0 + 1)
    assert await version(a) == 1

    assert (await engine.confirm(a.hold_id, "u1", now_ms=T0 + 2)).hold.version == 2
    assert (await engine.confirm(a.hold_id, "u1", now_ms=T0 + 3)).hold.version == 2
    assert (await engine.cancel(a.hold_id, "u1", now_ms=T0 + 4)).hold.version == 3
    assert (await engine.cancel(a.hold_id, "u1", now_ms=T0 + 5)).hold.version == 3
    with pytest.raises(HoldCancelled):
        await engine.confirm(a.hold_id, "u1", now_ms=T0 + 6)
    assert await version(a) == 3

    await engine.sweep(1, now_ms=b.expires_at_ms)
    assert await version(b) == 2
    assert (await engine.cancel(b.hold_id, "u1", now_ms=b.expires_at_ms + 1)).hold.version == 2
    with pytest.raises(HoldExpired):
        await engine.confirm(b.hold_id, "u1", now_ms=b.expires_at_ms + 2)
    assert await version(b) == 2


@pytest.mark.backends()
async def test_invariant_after_every_step_of_a_random_workload(
    make_engine: EngineFactory,
) -> None:
    """capacity = remaining + held + confirmed, and held/confirmed match the holds."""
    engine = await make_engine(hold_ttl_s=20, max_held_per_user_slot=4, housekeeping_batch=2)
    rng = random.Random(20240601)
    slot_ids = [1, 5, 2, 6, 3]
    now = T0
    for slot_id in slot_ids:
        await engine.create_slot(slot_id, rng.randint(0, 8), now_ms=now)
    holds: list[str] = []
    refusals = (
        CapacityExhausted,
        CapacityBelowCommitted,
        SlotClosed,
        UserHoldLimit,
        IdempotencyMismatch,
        HoldNotFound,
        HoldExpired,
        HoldCancelled,
    )

    for step in range(150):
        now += rng.choice([0, 1, 500, 3_000, 9_000])
        op = rng.choice(["hold"] * 5 + ["confirm"] * 2 + ["cancel"] * 2 + ["update", "sweep"])
        slot_id = rng.choice(slot_ids)
        user = rng.choice(["u1", "u2", "u3"])
        try:
            if op == "hold":
                key = f"k{rng.randint(1, 6)}"
                out = await engine.hold(slot_id, user, key, rng.randint(1, 3), now_ms=now)
                if out.changed:
                    holds.append(out.hold.hold_id)
            elif op in ("confirm", "cancel") and holds:
                hold_id = rng.choice(holds)
                owner = rng.choice([user, None, (await engine.get_hold(hold_id)).user_id])
                await getattr(engine, op)(hold_id, owner, now_ms=now)
            elif op == "update":
                await engine.update_slot(
                    slot_id,
                    capacity=rng.randint(0, 10),
                    state=rng.choice(["open", "open", "closed"]),
                    now_ms=now,
                )
            elif op == "sweep":
                await engine.sweep(engine.keys.partition_of(slot_id), now_ms=now)
        except refusals:
            pass

        await assert_invariant(engine)
        if step % 10 == 9:
            by_slot = {s: {"held": 0, "confirmed": 0} for s in slot_ids}
            for hold_id in holds:
                h = await engine.get_hold(hold_id)
                if h.status in by_slot[h.slot_id]:
                    by_slot[h.slot_id][h.status] += h.quantity
            for slot in await engine.availability():
                assert (slot.held, slot.confirmed) == (
                    by_slot[slot.slot_id]["held"],
                    by_slot[slot.slot_id]["confirmed"],
                )
    assert len(holds) > 20  # the workload did work
