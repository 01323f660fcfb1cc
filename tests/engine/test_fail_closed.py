"""Fail closed on lost Redis state, and come back by rebuilding from a snapshot.

A partition whose epoch marker is gone refuses every command and read with
StateUnavailable(partition) and changes nothing; the other partitions carry on.
load_partition() from a snapshot restores counters (recomputed from the holds),
the expiry and finished indexes, the per-user cap and idempotency replay.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from engine import (
    Engine,
    Hold,
    HoldNotFound,
    Slot,
    StateUnavailable,
    UserHoldLimit,
)
from engine.keys import EPOCH_FIELD

from ..conftest import EngineFactory

T0 = 1_700_000_000_000
TTL_MS = 300_000
LOST = 1  # the partition that loses its state: slots 1 and 5
KEY_NAMES = ("slots", "holds", "expiry", "user_held", "finished", "events")
KEY_NAMES += ("waitlist", "wait_order", "waiting", "wait_lapse", "wait_more")


@dataclasses.dataclass
class World:
    engine: Engine
    slots: list[Slot]  # of the lost partition
    holds: dict[str, Hold]  # of the lost partition, by role
    idem_keys: list[str]
    elsewhere: Hold  # a live hold on slot 2 (partition 2)


async def build_world(make_engine: EngineFactory) -> World:
    engine = await make_engine(max_held_per_user_slot=3, finished_retention_s=3_600)
    for slot_id, capacity in ((1, 10), (5, 4), (2, 5), (4, 5), (3, 5)):
        await engine.create_slot(slot_id, capacity, attributes={"label": f"s{slot_id}"}, now_ms=T0)
    await engine.update_slot(5, state="closed", now_ms=T0)

    holds = {
        "expired": (await engine.hold(1, "u4", "k4", now_ms=T0 - TTL_MS + 10)).hold,
        "held": (await engine.hold(1, "u1", "k1", 2, now_ms=T0 + 1)).hold,
        "confirmed": (await engine.hold(1, "u2", "k2", 3, now_ms=T0 + 2)).hold,
        "cancelled": (await engine.hold(1, "u3", "k3", now_ms=T0 + 3)).hold,
        "rebooked": (await engine.hold(1, "u5", "k5", now_ms=T0 + 4)).hold,
    }
    await engine.update_slot(5, state="open", now_ms=T0 + 5)
    holds["at_cap"] = (await engine.hold(5, "u1", "k6", 3, now_ms=T0 + 5)).hold
    await engine.update_slot(5, state="closed", now_ms=T0 + 5)
    await engine.confirm(holds["confirmed"].hold_id, "u2", now_ms=T0 + 6)
    await engine.cancel(holds["cancelled"].hold_id, "u3", now_ms=T0 + 7)
    await engine.confirm(holds["rebooked"].hold_id, "u5", now_ms=T0 + 8)
    await engine.cancel(holds["rebooked"].hold_id, "u5", now_ms=T0 + 9)
    assert await engine.sweep(LOST, now_ms=T0 + 20) == (1, 0)
    elsewhere = (await engine.hold(2, "u1", "k1", now_ms=T0 + 20)).hold

    holds = {role: await engine.get_hold(h.hold_id) for role, h in holds.items()}
    assert [h.status for h in holds.values()] == [
        "expired",
        "held",
        "confirmed",
        "cancelled",
        "cancelled",
        "held",
    ]
    return World(
        engine=engine,
        slots=[await engine.slot(1), await engine.slot(5)],
        holds=holds,
        idem_keys=[
            engine.keys.idempotency(h.slot_id, h.user_id, h.idempotency_key) for h in holds.values()
        ],
        elsewhere=elsewhere,
    )


async def dump(client: Any, engine: Engine, partition: int, idem_keys: list[str]) -> dict[str, Any]:
    """Everything the partition keeps, epoch marker and due mark aside, comparable."""
    keys = dict(zip(KEY_NAMES, engine.keys.partition(partition), strict=True))
    holds = await client.hgetall(keys["holds"])
    slots = await client.hgetall(keys["slots"])
    slots.pop(EPOCH_FIELD.encode(), None)
    slots.pop(b"due", None)  # a hint for housekeeping (lua/lib.lua), rebuilt when missing
    return {
        "slots": slots,
        # Compared as JSON: a rebuild re-encodes the same hold with another key order.
        "holds": {k: orjson.loads(v) for k, v in holds.items()},
        "expiry": await client.lrange(keys["expiry"], 0, -1),
        "user_held": await client.hgetall(keys["user_held"]),
        "finished": await client.lrange(keys["finished"], 0, -1),
        "idempotency": [await client.get(k) for k in idem_keys],
    }


async def events(client: Any, engine: Engine, partition: int) -> list[Any]:
    return list(await client.xrange(engine.keys.events(partition)))


def commands_on_lost_partition(world: World) -> dict[str, Callable[[], Awaitable[Any]]]:
    e, h = world.engine, world.holds
    later = T0 + 2 * TTL_MS  # every held hold is due: housekeeping would show
    return {
        "hold": lambda: e.hold(1, "u9", "fresh", now_ms=T0 + 30),
        "hold on another slot": lambda: e.hold(5, "u9", "fresh", now_ms=later),
        "hold replay": lambda: e.hold(1, "u1", "k1", 2, now_ms=T0 + 30),
        "confirm": lambda: e.confirm(h["held"].hold_id, "u1", now_ms=T0 + 30),
        "confirm due": lambda: e.confirm(h["held"].hold_id, "u1", now_ms=later),
        "confirm as operator": lambda: e.confirm(h["held"].hold_id, None, now_ms=T0 + 30),
        "cancel": lambda: e.cancel(h["held"].hold_id, "u1", now_ms=T0 + 30),
        "cancel booking": lambda: e.cancel(h["confirmed"].hold_id, "u2", now_ms=later),
        "cancel unknown": lambda: e.cancel("1-0123456789abcdef", None, now_ms=T0 + 30),
        "create_slot": lambda: e.create_slot(9, 3, now_ms=later),
        "create existing slot": lambda: e.create_slot(1, 3, now_ms=later),
        "update_slot": lambda: e.update_slot(1, capacity=50, now_ms=later),
        "update_slot below": lambda: e.update_slot(1, capacity=0, state="open", now_ms=later),
        "sweep": lambda: e.sweep(LOST, now_ms=later),
        "slot": lambda: e.slot(1),
        "unknown slot": lambda: e.slot(13),
        "get_hold": lambda: e.get_hold(h["held"].hold_id),
        "get_hold unknown": lambda: e.get_hold("5-0123456789abcdef"),
        "availability": lambda: e.availability(),
    }


@pytest.mark.backends()
@pytest.mark.parametrize("lost", ["epoch marker", "everything"])
async def test_lost_partition_refuses_everything_and_changes_nothing(
    make_engine: EngineFactory, redis_client: tuple[str, Any], lost: str
) -> None:
    _, client = redis_client
    world = await build_world(make_engine)
    engine = world.engine
    if lost == "everything":
        # Redis came back empty for this partition: an empty counter must not sell.
        await client.delete(*engine.keys.partition(LOST)[:5], *world.idem_keys)
    else:
        await client.hdel(engine.keys.slots(LOST), EPOCH_FIELD)
    before = await dump(client, engine, LOST, world.idem_keys)
    assert len(before["holds"]) == (6 if lost == "epoch marker" else 0)
    events_before = await events(client, engine, LOST)
    fresh_key = engine.keys.idempotency(1, "u9", "fresh")

    for name, call in commands_on_lost_partition(world).items():
        with pytest.raises(StateUnavailable) as info:
            await call()
        assert info.value.partition == LOST, name

    assert await dump(client, engine, LOST, world.idem_keys) == before
    assert await events(client, engine, LOST) == events_before
    assert not await client.exists(fresh_key)
    assert not await client.hexists(engine.keys.slots(LOST), EPOCH_FIELD)
    assert await engine.unavailable_partitions() == [LOST]


@pytest.mark.backends()
async def test_other_partitions_keep_working(
    make_engine: EngineFactory, redis_client: tuple[str, Any]
) -> None:
    _, client = redis_client
    world = await build_world(make_engine)
    engine = world.engine
    await client.hdel(engine.keys.slots(LOST), EPOCH_FIELD)

    held = (await engine.hold(2, "u2", "k", 2, now_ms=T0 + 30)).hold
    assert (await engine.confirm(held.hold_id, "u2", now_ms=T0 + 31)).hold.status == "confirmed"
    assert (await engine.cancel(world.elsewhere.hold_id, "u1", now_ms=T0 + 32)).changed
    assert (await engine.create_slot(6, 2, now_ms=T0 + 33)).capacity == 2  # partition 2
    assert (await engine.update_slot(4, capacity=7, now_ms=T0 + 34)).remaining == 7
    await engine.hold(3, "u1", "k", now_ms=T0 + 35)
    assert await engine.sweep(3, now_ms=T0 + 2 * TTL_MS) == (1, 0)
    assert await engine.sweep(0, now_ms=T0 + 2 * TTL_MS) == (0, 0)
    assert (await engine.get_hold(held.hold_id)).status == "confirmed"
    slot = await engine.slot(2)
    assert (slot.capacity, slot.remaining, slot.held, slot.confirmed) == (5, 3, 0, 2)
    assert await engine.unavailable_partitions() == [LOST]


@pytest.mark.backends()
@pytest.mark.parametrize("lost", ["epoch marker", "everything"])
async def test_rebuild_from_snapshot_restores_service(
    make_engine: EngineFactory, redis_client: tuple[str, Any], lost: str
) -> None:
    _, client = redis_client
    world = await build_world(make_engine)
    engine, h = world.engine, world.holds
    intact = await dump(client, engine, LOST, world.idem_keys)
    # The expiry queue keeps an entry per hold made (skipped once settled).
    assert (len(intact["holds"]), len(intact["expiry"]), len(intact["finished"])) == (6, 5, 3)
    if lost == "everything":
        await client.delete(*engine.keys.partition(LOST)[:5], *world.idem_keys)
    else:
        await client.hdel(engine.keys.slots(LOST), EPOCH_FIELD)
    events_before = await events(client, engine, LOST)

    # Counters in the snapshot are ignored: they are recomputed from the holds.
    garbage = [dataclasses.replace(s, remaining=99, held=99, confirmed=99) for s in world.slots]
    # The rebuild carries on the partition's event sequence (PostgreSQL's highest).
    sequence = int(intact["slots"][b"seq"])
    await engine.load_partition(
        LOST, garbage, list(h.values()), epoch="rebuilt", now_ms=T0 + 40, sequence=sequence
    )

    assert await client.hget(engine.keys.slots(LOST), EPOCH_FIELD) == b"rebuilt"
    assert await engine.unavailable_partitions() == []
    rebuilt = await dump(client, engine, LOST, world.idem_keys)
    # The rebuilt expiry queue has the held holds only: the entries of holds settled
    # before the loss were skipped-to-be and are not rebuilt.
    held_ids = {x.hold_id.encode() for x in h.values() if x.status == "held"}
    assert rebuilt.pop("expiry") == [
        e for e in intact.pop("expiry") if e.partition(b"|")[2] in held_ids
    ]
    assert rebuilt == intact
    assert await events(client, engine, LOST) == events_before  # a rebuild emits nothing
    assert [await engine.slot(1), await engine.slot(5)] == world.slots
    c1, c5 = world.slots
    assert (c1.capacity, c1.remaining, c1.held, c1.confirmed, c1.label) == (10, 5, 2, 3, "s1")
    assert (c5.capacity, c5.remaining, c5.held, c5.state) == (4, 1, 3, "closed")
    for hold in h.values():
        assert await engine.get_hold(hold.hold_id) == hold
    assert [s.slot_id for s in await engine.availability()] == [1, 2, 3, 4, 5]

    # Idempotency replay works for a loaded hold; the key stays bound to it.
    replay = await engine.hold(1, "u1", "k1", 2, now_ms=T0 + 41)
    assert (replay.changed, replay.hold) == (False, h["held"])
    replay = await engine.hold(1, "u3", "k3", 1, now_ms=T0 + 41)
    assert (replay.changed, replay.hold) == (False, h["cancelled"])
    # The per-user cap came back with the holds.
    await engine.update_slot(5, state="open", now_ms=T0 + 42)
    with pytest.raises(UserHoldLimit):
        await engine.hold(5, "u1", "another", now_ms=T0 + 42)
    # And the engine works on: confirm a loaded hold, sell what is left.
    confirmed = await engine.confirm(h["held"].hold_id, "u1", now_ms=T0 + 43)
    assert (confirmed.hold.status, confirmed.hold.version) == ("confirmed", 2)
    await engine.hold(1, "u9", "fresh", 3, now_ms=T0 + 44)
    await engine.hold(1, "u8", "fresh", 2, now_ms=T0 + 44)
    slot = await engine.slot(1)
    assert (slot.remaining, slot.held, slot.confirmed) == (0, 5, 5)

    # The expiry index came back: the loaded hold at the cap expires on time.
    assert await engine.sweep(LOST, now_ms=h["at_cap"].expires_at_ms) == (1, 0)
    assert (await engine.get_hold(h["at_cap"].hold_id)).status == "expired"
    # So did the finished index: finished holds are forgotten after retention.
    last_finished = h["expired"].expired_at_ms
    assert last_finished is not None
    await engine.sweep(LOST, now_ms=last_finished + 3_600_000)
    for role in ("expired", "cancelled", "rebooked"):
        with pytest.raises(HoldNotFound):
            await engine.get_hold(h[role].hold_id)
    assert (await engine.get_hold(h["confirmed"].hold_id)).status == "confirmed"


@pytest.mark.backends()
async def test_rebuild_expires_holds_that_came_due_meanwhile(
    make_engine: EngineFactory, redis_client: tuple[str, Any]
) -> None:
    _, client = redis_client
    world = await build_world(make_engine)
    engine, h = world.engine, world.holds
    await client.delete(*engine.keys.partition(LOST)[:5], *world.idem_keys)
    later = h["at_cap"].expires_at_ms + 1

    await engine.load_partition(LOST, world.slots, list(h.values()), epoch="x", now_ms=later)

    # Loaded as held; the first command of the partition expires it and emits it.
    assert (await engine.get_hold(h["held"].hold_id)).status == "held"
    assert await engine.sweep(LOST, now_ms=later) == (2, 0)  # `held` and `at_cap`
    expired = await engine.get_hold(h["held"].hold_id)
    assert (expired.status, expired.version, expired.expired_at_ms) == ("expired", 2, later)
    last = (await events(client, engine, LOST))[-1][1]
    assert orjson.loads(last[b"h"])["st"] == "expired"
    slot = await engine.slot(1)
    assert (slot.remaining, slot.held, slot.confirmed) == (7, 0, 3)
    # The idempotency memory restored with the hold still answers.
    replay = await engine.hold(1, "u1", "k1", 2, now_ms=later)
    assert (replay.changed, replay.hold.status) == (False, "expired")
