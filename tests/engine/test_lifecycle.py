"""Extend and partial confirm (lua/extend.lua, lua/confirm.lua), on each backend.

Time is an explicit clock; slots map to partition ``slot_id % 4``.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from engine import (
    ConfirmMismatch,
    Engine,
    ExtensionLimit,
    HoldCancelled,
    HoldConfirmed,
    HoldExpired,
    HoldNotFound,
    QuantityTooLarge,
)

from ..conftest import EngineFactory
from .test_rules import T0, TTL_MS, assert_invariant, counters

MAX_LIFE_MS = 900_000  # EngineSettings.hold_max_lifetime_s default, in ms


async def events_of(engine: Engine, hold_id: str) -> list[dict[str, Any]]:
    """The hold's events, in stream order, as the scripts wrote them."""
    p = engine.keys.partition_of(int(hold_id.partition("-")[0]))
    entries = await engine._redis.xrange(engine.keys.events(p), "-", "+")
    found = [orjson.loads(fields[b"h"]) for _, fields in entries if b"h" in fields]
    return [e for e in found if e["i"] == hold_id]


# -- extend ----------------------------------------------------------------------


@pytest.mark.backends()
async def test_extend_moves_expiry_to_now_plus_lifetime_and_counts(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    hold = (await engine.hold(1, "u1", "k", 2, now_ms=T0)).hold

    out = await engine.lifecycle.extend(hold.hold_id, "u1", now_ms=T0 + 100_000)

    assert out.changed
    h = out.hold
    assert (h.status, h.expires_at_ms, h.extensions, h.version) == (
        "held",
        T0 + 100_000 + TTL_MS,
        1,
        2,
    )
    assert await engine.get_hold(hold.hold_id) == h
    assert await counters(engine, 1) == (5, 3, 2, 0)
    last = (await events_of(engine, hold.hold_id))[-1]
    assert (last["st"], last["x"], last["t"], last["xn"]) == ("held", "extended", T0 + 100_000, 1)
    # The event-only fields never reach the stored hold.
    raw = await engine._redis.hget(engine.keys.holds(1), hold.hold_id)
    assert not {"x", "t", "r"} & set(orjson.loads(raw))
    await assert_invariant(engine)


@pytest.mark.backends()
async def test_extend_stops_after_max_extensions(make_engine: EngineFactory) -> None:
    engine = await make_engine(hold_max_lifetime_s=10_000)
    await engine.create_slot(1, 5, now_ms=T0)
    hold = (await engine.hold(1, "u1", "k", now_ms=T0)).hold
    await engine.lifecycle.extend(hold.hold_id, "u1", now_ms=T0 + 1)
    await engine.lifecycle.extend(hold.hold_id, "u1", now_ms=T0 + 2)

    with pytest.raises(ExtensionLimit) as exc:
        await engine.lifecycle.extend(hold.hold_id, "u1", now_ms=T0 + 3)

    assert exc.value.extensions == 2
    after = await engine.get_hold(hold.hold_id)
    assert (after.expires_at_ms, after.extensions, after.version) == (T0 + 2 + TTL_MS, 2, 3)


@pytest.mark.backends()
async def test_extend_never_passes_the_longest_life(make_engine: EngineFactory) -> None:
    engine = await make_engine(hold_max_extensions=10)
    await engine.create_slot(1, 5, now_ms=T0)
    hold = (await engine.hold(1, "u1", "k", now_ms=T0)).hold
    await engine.lifecycle.extend(hold.hold_id, "u1", now_ms=T0 + 250_000)
    await engine.lifecycle.extend(hold.hold_id, "u1", now_ms=T0 + 500_000)
    # now + lifetime == created + longest life exactly: allowed.
    edge = T0 + MAX_LIFE_MS - TTL_MS
    out = await engine.lifecycle.extend(hold.hold_id, "u1", now_ms=edge)
    assert out.hold.expires_at_ms == T0 + MAX_LIFE_MS

    # One millisecond later would pass it: refused, not shortened.
    with pytest.raises(ExtensionLimit) as exc:
        await engine.lifecycle.extend(hold.hold_id, "u1", now_ms=edge + 1)
    assert exc.value.latest_expires_at_ms == T0 + MAX_LIFE_MS
    assert (await engine.get_hold(hold.hold_id)).expires_at_ms == T0 + MAX_LIFE_MS


@pytest.mark.backends()
async def test_extend_refuses_finished_and_foreign_holds(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 9, now_ms=T0)
    held = [(await engine.hold(1, "u1", f"k{n}", now_ms=T0)).hold.hold_id for n in range(4)]
    await engine.confirm(held[0], "u1", now_ms=T0 + 1)
    await engine.cancel(held[1], "u1", now_ms=T0 + 1)

    with pytest.raises(HoldConfirmed):
        await engine.lifecycle.extend(held[0], "u1", now_ms=T0 + 2)
    with pytest.raises(HoldCancelled):
        await engine.lifecycle.extend(held[1], "u1", now_ms=T0 + 2)
    with pytest.raises(HoldNotFound):
        await engine.lifecycle.extend(held[2], "u2", now_ms=T0 + 2)
    with pytest.raises(HoldNotFound):
        await engine.lifecycle.extend("1-nosuchhold", "u1", now_ms=T0 + 2)
    # Operators (user None) may extend anyone's hold.
    out = await engine.lifecycle.extend(held[3], None, now_ms=T0 + 10)
    assert out.hold.extensions == 1
    # Due but not yet swept: expired on the spot, and said so.
    with pytest.raises(HoldExpired):
        await engine.lifecycle.extend(held[2], "u1", now_ms=T0 + TTL_MS)
    assert (await engine.get_hold(held[2])).status == "expired"
    await assert_invariant(engine)


@pytest.mark.backends()
async def test_extended_hold_expires_at_its_new_time_and_delays_nobody(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 9, now_ms=T0)
    p = engine.keys.partition_of(1)
    before = (await engine.hold(1, "u1", "a", now_ms=T0)).hold
    extended = (await engine.hold(1, "u2", "b", now_ms=T0 + 10)).hold
    after = (await engine.hold(1, "u3", "c", now_ms=T0 + 20)).hold
    await engine.lifecycle.extend(extended.hold_id, "u2", now_ms=T0 + 25)
    later = (await engine.hold(1, "u4", "d", now_ms=T0 + 30)).hold

    async def status(hold_id: str) -> str:
        return (await engine.get_hold(hold_id)).status

    # At its old time the extended hold stays (its old entry is skipped) and
    # does not hold up the hold behind it.
    assert await engine.sweep(p, now_ms=T0 + 20 + TTL_MS) == (2, False)
    assert await status(before.hold_id) == await status(after.hold_id) == "expired"
    assert await status(extended.hold_id) == "held"
    assert await engine.sweep(p, now_ms=T0 + 25 + TTL_MS - 1) == (0, False)
    assert await status(extended.hold_id) == "held"
    # At its new time it expires, and the next one exactly at its own time.
    assert await engine.sweep(p, now_ms=T0 + 25 + TTL_MS) == (1, False)
    assert await status(extended.hold_id) == "expired"
    assert (await engine.get_hold(extended.hold_id)).expired_at_ms == T0 + 25 + TTL_MS
    assert await status(later.hold_id) == "held"
    assert await engine.sweep(p, now_ms=T0 + 30 + TTL_MS) == (1, False)
    assert await status(later.hold_id) == "expired"
    assert await counters(engine, 1) == (9, 9, 0, 0)
    await assert_invariant(engine)


# -- partial confirm -------------------------------------------------------------


@pytest.mark.backends()
async def test_partial_confirm_gives_the_rest_back_in_the_same_call(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 10, now_ms=T0)
    hold = (await engine.hold(1, "u1", "k", 4, now_ms=T0)).hold
    assert await counters(engine, 1) == (10, 6, 4, 0)

    out = await engine.confirm(hold.hold_id, "u1", quantity=3, now_ms=T0 + 5)

    assert out.changed
    assert (out.hold.status, out.hold.quantity, out.hold.version) == ("confirmed", 3, 2)
    assert out.hold.confirmed_at_ms == T0 + 5
    assert await counters(engine, 1) == (10, 7, 0, 3)
    last = (await events_of(engine, hold.hold_id))[-1]
    assert (last["st"], last["q"], last["r"]) == ("confirmed", 3, 1)
    # The user's held units are all gone: they may hold the slot again.
    assert (await engine.hold(1, "u1", "k2", 7, now_ms=T0 + 6)).changed
    await assert_invariant(engine)


@pytest.mark.backends()
async def test_partial_confirm_replays_and_refuses_another_quantity(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 10, now_ms=T0)
    hold = (await engine.hold(1, "u1", "k", 4, now_ms=T0)).hold
    first = await engine.confirm(hold.hold_id, "u1", quantity=2, now_ms=T0 + 5)

    again = await engine.confirm(hold.hold_id, "u1", quantity=2, now_ms=T0 + 9)
    bare = await engine.confirm(hold.hold_id, "u1", now_ms=T0 + 9)
    assert not again.changed and not bare.changed
    assert again.hold == bare.hold == first.hold
    with pytest.raises(ConfirmMismatch) as exc:
        await engine.confirm(hold.hold_id, "u1", quantity=4, now_ms=T0 + 9)
    assert exc.value.hold.quantity == 2
    assert await counters(engine, 1) == (10, 8, 0, 2)
    assert len(await events_of(engine, hold.hold_id)) == 2
    await assert_invariant(engine)


@pytest.mark.backends()
async def test_partial_confirm_of_more_than_held_changes_nothing(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 10, now_ms=T0)
    hold = (await engine.hold(1, "u1", "k", 2, now_ms=T0)).hold

    with pytest.raises(QuantityTooLarge) as exc:
        await engine.confirm(hold.hold_id, "u1", quantity=3, now_ms=T0 + 1)

    assert exc.value.held == 2
    assert await engine.get_hold(hold.hold_id) == hold
    # Whole confirm (the same quantity, given or not) releases nothing.
    out = await engine.confirm(hold.hold_id, "u1", quantity=2, now_ms=T0 + 2)
    assert "r" not in (await events_of(engine, hold.hold_id))[-1]
    assert out.hold.quantity == 2
    assert await counters(engine, 1) == (10, 8, 0, 2)
    await assert_invariant(engine)


@pytest.mark.backends()
async def test_cancel_after_partial_confirm_gives_back_the_confirmed_part(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 5, now_ms=T0)
    hold = (await engine.hold(1, "u1", "k", 5, now_ms=T0)).hold
    await engine.confirm(hold.hold_id, "u1", quantity=1, now_ms=T0 + 1)
    assert await counters(engine, 1) == (5, 4, 0, 1)

    await engine.cancel(hold.hold_id, "u1", now_ms=T0 + 2)

    assert await counters(engine, 1) == (5, 5, 0, 0)
    await assert_invariant(engine)
