"""The event streams are a complete record: replaying them rebuilds Redis' state.

A seeded mixed workload (slot creations and updates, holds, replays, confirms,
cancels, expiries by clock, refusals) runs against a plain-Python model that
predicts every answer. Afterwards each partition's stream is read from the start
and folded, in plain Python, into holds (latest version wins) and slot counters;
both must equal what the engine reports, and each hold's events must be exactly
its transitions, versions 1, 2, 3... without gaps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from engine import (
    CapacityBelowCommitted,
    CapacityExhausted,
    Engine,
    HoldCancelled,
    HoldExpired,
    HoldNotFound,
    IdempotencyMismatch,
    Slot,
    SlotClosed,
    SlotExists,
    SlotNotFound,
    UserHoldLimit,
)
from engine.models import Hold

from ..conftest import EngineFactory

T0 = 1_700_000_000_000
PARTITIONS = 4
BATCH = 2
HOLD_TTL_S = 60
MAX_HELD = 4


@dataclass
class MHold:
    hold_id: str
    slot_id: int
    user: str
    quantity: int
    key: str
    expires_at: int
    statuses: list[str] = field(default_factory=lambda: ["held"])

    @property
    def status(self) -> str:
        return self.statuses[-1]


@dataclass
class MSlot:
    capacity: int
    state: str
    attributes: dict[str, str]


@dataclass
class Model:
    """What the engine should answer, given its rules (lua/*.lua)."""

    now: int = T0
    slots: dict[int, MSlot] = field(default_factory=dict)
    holds: dict[str, MHold] = field(default_factory=dict)
    keys: dict[tuple[str, int, str], str] = field(default_factory=dict)
    slot_events: int = 0
    expiries: dict[str, int] = field(default_factory=dict)

    def sum_of(self, slot_id: int, status: str) -> int:
        return sum(
            h.quantity for h in self.holds.values() if h.slot_id == slot_id and h.status == status
        )

    def remaining(self, slot_id: int) -> int:
        return (
            self.slots[slot_id].capacity
            - self.sum_of(slot_id, "held")
            - self.sum_of(slot_id, "confirmed")
        )

    def due(self, partition: int) -> list[MHold]:
        return sorted(
            (
                h
                for h in self.holds.values()
                if h.slot_id % PARTITIONS == partition
                and h.status == "held"
                and h.expires_at <= self.now
            ),
            key=lambda h: (h.expires_at, h.hold_id),  # ZRANGEBYSCORE order
        )

    def housekeep(self, partition: int, how: str = "housekeeping") -> int:
        expired = self.due(partition)[:BATCH]
        for h in expired:
            h.statuses.append("expired")
            self.expiries[how] = self.expiries.get(how, 0) + 1
        return len(expired)

    def settle(self, h: MHold) -> None:
        if h.status == "held" and h.expires_at <= self.now:
            h.statuses.append("expired")
            self.expiries["settle"] = self.expiries.get("settle", 0) + 1


def _bucket(status: str | None) -> str:
    return {"held": "held", "confirmed": "conf"}.get(status or "", "rem")


async def read_stream(client: Any, key: str) -> list[dict[bytes, bytes]]:
    entries: list[dict[bytes, bytes]] = []
    start = "-"
    while True:
        page = await client.xrange(key, start, "+", count=500)
        entries.extend(fields for _, fields in page)
        if len(page) < 500:
            return entries
        last = page[-1][0].decode()
        ms, seq = last.split("-")
        start = f"{ms}-{int(seq) + 1}"


@dataclass
class Rebuilt:
    holds: dict[str, dict[str, Any]] = field(default_factory=dict)
    statuses: dict[str, list[str]] = field(default_factory=dict)
    versions: dict[str, list[int]] = field(default_factory=dict)
    slots: dict[int, dict[str, Any]] = field(default_factory=dict)
    slot_events: int = 0

    def apply(self, fields: dict[bytes, bytes]) -> None:
        assert len(fields) == 1, fields
        if b"s" in fields:
            s = orjson.loads(fields[b"s"])
            self.slots[int(s["id"])] = {k: s[k] for k in ("cap", "rem", "held", "conf", "state")}
            self.slots[int(s["id"])]["meta"] = s["meta"]
            self.slot_events += 1
            return
        h = orjson.loads(fields[b"h"])
        previous = self.holds.get(h["i"])
        self.statuses.setdefault(h["i"], []).append(h["st"])
        self.versions.setdefault(h["i"], []).append(h["v"])
        if previous is None or h["v"] > previous["v"]:
            self.holds[h["i"]] = h
        # Counters move from the bucket of the hold's previous state to its new one.
        counters = self.slots[int(h["s"])]
        counters[_bucket(previous["st"] if previous else None)] -= h["q"]
        counters[_bucket(h["st"])] += h["q"]

    def slot(self, slot_id: int) -> Slot:
        c = self.slots[slot_id]
        attrs = orjson.loads(c["meta"])
        return Slot(
            slot_id=slot_id,
            capacity=c["cap"],
            remaining=c["rem"],
            held=c["held"],
            confirmed=c["conf"],
            state=c["state"],
            label=attrs.get("label"),
            starts_at=attrs.get("starts_at"),
            ends_at=attrs.get("ends_at"),
        )


class Driver:
    """Runs one command on the engine and checks its answer against the model."""

    def __init__(self, engine: Engine, model: Model) -> None:
        self.engine = engine
        self.model = model

    async def create(self, slot_id: int, capacity: int, attrs: dict[str, str]) -> None:
        model, now = self.model, self.model.now
        model.housekeep(slot_id % PARTITIONS)
        if slot_id in model.slots:
            with pytest.raises(SlotExists):
                await self.engine.create_slot(slot_id, capacity, attributes=attrs, now_ms=now)
            return
        await self.engine.create_slot(slot_id, capacity, attributes=attrs, now_ms=now)
        model.slots[slot_id] = MSlot(capacity, "open", attrs)
        model.slot_events += 1

    async def update(self, slot_id: int, capacity: int | None, state: str | None) -> None:
        model, now = self.model, self.model.now
        model.housekeep(slot_id % PARTITIONS)
        if slot_id not in model.slots:
            with pytest.raises(SlotNotFound):
                await self.engine.update_slot(slot_id, capacity=capacity, state=state, now_ms=now)
            return
        s = model.slots[slot_id]
        committed = model.sum_of(slot_id, "held") + model.sum_of(slot_id, "confirmed")
        if capacity is not None and capacity < committed:
            with pytest.raises(CapacityBelowCommitted) as refused:
                await self.engine.update_slot(slot_id, capacity=capacity, state=state, now_ms=now)
            assert refused.value.committed == committed
            return
        got = await self.engine.update_slot(slot_id, capacity=capacity, state=state, now_ms=now)
        s.capacity = s.capacity if capacity is None else capacity
        s.state = state or s.state
        model.slot_events += 1
        assert (got.capacity, got.remaining, got.state) == (
            s.capacity,
            model.remaining(slot_id),
            s.state,
        )

    async def hold(self, slot_id: int, user: str, key: str, quantity: int) -> MHold | None:
        model, now = self.model, self.model.now
        model.housekeep(slot_id % PARTITIONS)
        remembered = model.keys.get((user, slot_id, key))
        if remembered is not None:
            first = model.holds[remembered]
            if first.quantity != quantity:
                with pytest.raises(IdempotencyMismatch):
                    await self.engine.hold(slot_id, user, key, quantity, now_ms=now)
                return None
            out = await self.engine.hold(slot_id, user, key, quantity, now_ms=now)
            assert not out.changed
            assert out.hold.hold_id == remembered
            if not (first.status == "held" and first.expires_at <= now):
                # (a due hold beyond the batch is replayed as stored: see test_rules)
                assert out.hold.status == first.status
            return None
        expected: type[Exception] | None = None
        if slot_id not in model.slots:
            expected = SlotNotFound
        elif model.slots[slot_id].state == "closed":
            expected = SlotClosed
        elif model.remaining(slot_id) < quantity:
            expected = CapacityExhausted
        elif (
            sum(
                h.quantity
                for h in model.holds.values()
                if (h.slot_id, h.user, h.status) == (slot_id, user, "held")
            )
            + quantity
            > MAX_HELD
        ):
            expected = UserHoldLimit
        if expected is not None:
            with pytest.raises(expected):
                await self.engine.hold(slot_id, user, key, quantity, now_ms=now)
            return None
        out = await self.engine.hold(slot_id, user, key, quantity, now_ms=now)
        assert out.changed
        made = MHold(out.hold.hold_id, slot_id, user, quantity, key, out.hold.expires_at_ms)
        model.holds[made.hold_id] = made
        model.keys[(user, slot_id, key)] = made.hold_id
        return made

    async def finish(self, op: str, h: MHold, caller: str | None) -> None:
        """confirm or cancel ``h`` as ``caller`` (None: operator)."""
        model, now = self.model, self.model.now
        command = self.engine.confirm if op == "confirm" else self.engine.cancel
        model.housekeep(h.slot_id % PARTITIONS)
        if caller not in (None, h.user):
            with pytest.raises(HoldNotFound):
                await command(h.hold_id, caller, now_ms=now)
            return
        model.settle(h)
        if op == "confirm" and h.status in ("cancelled", "expired"):
            error = HoldCancelled if h.status == "cancelled" else HoldExpired
            with pytest.raises(error):
                await command(h.hold_id, caller, now_ms=now)
            return
        out = await command(h.hold_id, caller, now_ms=now)
        movable = ("held",) if op == "confirm" else ("held", "confirmed")
        assert out.changed == (h.status in movable)
        if out.changed:
            h.statuses.append("confirmed" if op == "confirm" else "cancelled")
        assert out.hold.status == h.status

    async def sweep(self, partition: int) -> None:
        expired = self.model.housekeep(partition, "sweep")
        still_due = len(self.model.due(partition))
        got = await self.engine.sweep(partition, now_ms=self.model.now)
        assert got == (expired, still_due)


async def run_scripted(driver: Driver) -> None:
    """Makes sure each way to expire happens at least once, whatever the seed does."""
    model = driver.model
    await driver.create(4, 10, {"label": "scripted"})  # partition 0
    await driver.create(8, 10, {})  # partition 0 as well
    made = [await driver.hold(4, f"s{i}", "k", 1) for i in range(5)]
    model.now += 1
    late = await driver.hold(8, "s0", "k", 2)
    assert late is not None and all(made)
    model.now += HOLD_TTL_S * 1_000 + 1  # everything above is due
    await driver.finish("confirm", late, "s0")  # housekeeping takes 2, settle takes `late`
    await driver.sweep(0)  # two more of the five; one stays due
    assert model.expiries == {"housekeeping": 2, "settle": 1, "sweep": 2}


async def run_random(driver: Driver, rng: random.Random, steps: int) -> None:
    model = driver.model
    slot_pool = list(range(1, 11))
    users = ["u1", "u2", "u3", "u4"]
    for _ in range(steps):
        # Now and then a jump past every hold's expiry leaves more holds due in a
        # partition than one command's housekeeping batch takes.
        model.now += rng.choice([0, 0, 1, 700, 2_500, 6_000, 15_000, HOLD_TTL_S * 1_000])
        op = rng.choices(
            ["create", "update", "hold", "confirm", "cancel", "sweep"],
            weights=[2, 2, 10, 4, 3, 1],
        )[0]
        if op == "create":
            slot_id = rng.choice(slot_pool)
            attrs = rng.choice([{}, {"label": f"gate {slot_id}"}])
            await driver.create(slot_id, rng.randint(0, 12), attrs)
        elif op == "update":
            await driver.update(
                rng.choice(slot_pool),
                rng.choice([None, rng.randint(0, 10)]),
                rng.choice([None, "open", "closed"]),
            )
        elif op == "hold":
            await driver.hold(
                rng.choice(slot_pool), rng.choice(users), f"k{rng.randint(1, 4)}", rng.randint(1, 3)
            )
        elif op in ("confirm", "cancel") and model.holds:
            live = sorted(i for i, h in model.holds.items() if h.status == "held")
            pool = live if live and rng.random() < 0.7 else sorted(model.holds)
            h = model.holds[rng.choice(pool)]
            await driver.finish(op, h, rng.choice([h.user, h.user, None, "intruder"]))
        elif op == "sweep":
            await driver.sweep(rng.randrange(PARTITIONS))


@pytest.mark.backends("redis", "cluster")
async def test_streams_rebuild_exactly_the_live_state(
    make_engine: EngineFactory, redis_client: tuple[str, Any]
) -> None:
    _, client = redis_client
    engine = await make_engine(
        hold_ttl_s=HOLD_TTL_S, housekeeping_batch=BATCH, max_held_per_user_slot=MAX_HELD
    )
    model = Model()
    driver = Driver(engine, model)
    await run_scripted(driver)
    await run_random(driver, random.Random(7), steps=400)

    rebuilt = Rebuilt()
    entries_per_partition = []
    for p in range(PARTITIONS):
        entries = await read_stream(client, engine.keys.events(p))
        entries_per_partition.append(len(entries))
        for fields in entries:
            rebuilt.apply(fields)

    # Holds: the latest event of each is exactly the stored hold.
    assert set(rebuilt.holds) == set(model.holds)
    for hold_id, latest in rebuilt.holds.items():
        assert Hold.from_stored(orjson.dumps(latest)) == await engine.get_hold(hold_id)

    # Slots: folding slot and hold events gives exactly the live counters.
    assert [rebuilt.slot(s.slot_id) for s in await engine.availability()] == (
        await engine.availability()
    )
    assert set(rebuilt.slots) == set(model.slots)
    for slot_id in model.slots:
        s = await engine.slot(slot_id)
        assert s.capacity == s.remaining + s.held + s.confirmed
        assert s.remaining == model.remaining(slot_id)

    # One event per transition, none for refusals, replays or no-op commands.
    for hold_id, h in model.holds.items():
        assert rebuilt.statuses[hold_id] == h.statuses, hold_id
        assert rebuilt.versions[hold_id] == list(range(1, len(h.statuses) + 1)), hold_id
    transitions = sum(len(h.statuses) for h in model.holds.values())
    assert sum(entries_per_partition) == transitions + model.slot_events
    assert rebuilt.slot_events == model.slot_events

    # The workload exercised every transition and every way to expire.
    seen = {
        (a, b)
        for h in model.holds.values()
        for a, b in zip(h.statuses, h.statuses[1:], strict=False)
    }
    assert seen == {
        ("held", "confirmed"),
        ("held", "cancelled"),
        ("held", "expired"),
        ("confirmed", "cancelled"),
    }
    assert all(n > 0 for n in entries_per_partition)


@pytest.mark.backends("redis", "cluster")
async def test_each_event_carries_the_hold(
    make_engine: EngineFactory, redis_client: tuple[str, Any]
) -> None:
    """A short scripted life: fields of every event, in order, on one partition."""
    _, client = redis_client
    engine = await make_engine()
    await engine.create_slot(2, 4, attributes={"label": "dock"}, now_ms=T0)
    a = (await engine.hold(2, "u1", "ka", 2, now_ms=T0 + 1)).hold
    b = (await engine.hold(2, "u2", "kb", now_ms=T0 + 2)).hold
    await engine.hold(2, "u1", "ka", 2, now_ms=T0 + 3)  # replay: no event
    with pytest.raises(CapacityExhausted):
        await engine.hold(2, "u3", "kc", 3, now_ms=T0 + 3)  # refusal: no event
    await engine.confirm(a.hold_id, "u1", now_ms=T0 + 4)
    await engine.confirm(a.hold_id, "u1", now_ms=T0 + 5)  # no-op: no event
    await engine.update_slot(2, capacity=3, now_ms=T0 + 6)
    await engine.cancel(a.hold_id, None, now_ms=T0 + 7)
    await engine.sweep(2, now_ms=b.expires_at_ms)

    entries = await read_stream(client, engine.keys.events(2))
    decoded = [
        ("s", orjson.loads(f[b"s"])) if b"s" in f else ("h", orjson.loads(f[b"h"])) for f in entries
    ]
    kinds = [(kind, body.get("st") or body.get("cap")) for kind, body in decoded]
    assert kinds == [
        ("s", 4),
        ("h", "held"),
        ("h", "held"),
        ("h", "confirmed"),
        ("s", 3),
        ("h", "cancelled"),
        ("h", "expired"),
    ]
    created = decoded[0][1]
    assert created == {
        "id": "2",
        "cap": 4,
        "rem": 4,
        "held": 0,
        "conf": 0,
        "state": "open",
        "meta": '{"label":"dock"}',
        "t": T0,
        "n": 1,
    }
    assert {k: decoded[4][1][k] for k in ("rem", "held", "conf", "t")} == {
        "rem": 0,
        "held": 1,
        "conf": 2,
        "t": T0 + 6,
    }
    last_a = decoded[5][1]
    assert (last_a["i"], last_a["u"], last_a["q"], last_a["v"]) == (a.hold_id, "u1", 2, 3)
    assert (last_a["c"], last_a["cf"], last_a["ca"]) == (T0 + 1, T0 + 4, T0 + 7)
    # The idempotency key travels once, on the event that makes the hold.
    assert decoded[1][1]["k"] == "ka" and "k" not in last_a
    last_b = decoded[6][1]
    assert (last_b["i"], last_b["v"], last_b["xa"]) == (b.hold_id, 2, b.expires_at_ms)
    # Every event carries the partition's sequence, one more each time.
    assert [body["n"] for _, body in decoded] == [1, 2, 3, 4, 5, 6, 7]
    # The event is the stored record plus the hold's id and slot and the sequence.
    stored = orjson.loads(await client.hget(engine.keys.holds(2), b.hold_id))
    assert {**stored, "i": b.hold_id, "s": "2", "n": 7} == last_b
