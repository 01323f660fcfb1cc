"""The waitlist against a plain Python model, on the real Redis.

Hypothesis drives joins (new keys, replays, reused keys), leaves, plain holds,
confirms, cancels, capacity and state changes, and the clock (entries lapse,
holds and offers expire, the sweep runs) through the engine and through
``_Model``. After every step the engine agrees with the model on every answer,
every entry (status, place in line, offer), every hold and every slot, and:

- capacity = remaining + held + confirmed, and held / confirmed are exactly the
  sums of the live holds (no capacity lost or created);
- FIFO: every offered entry of a slot joined before every entry still waiting
  there, and no open slot keeps a head waiting whose whole quantity fits;
- no entry is offered twice (one 'offered' event per entry on the stream).

One partition and a housekeeping batch that always suffices: every command
first expires every due hold (in queue order, each offering what it frees)
and lapses every due entry, as lib.lua's housekeep does. Offers and holds live
equally long, so the expiry queue stays in time order.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from engine import (
    CapacityBelowCommitted,
    CapacityExhausted,
    Engine,
    EngineError,
    EngineSettings,
    EntryNotFound,
    HoldCancelled,
    HoldExpired,
    IdempotencyMismatch,
    SlotClosed,
    UserHoldLimit,
    WaitingLimit,
)

from ..conftest import redis_url
from .test_model import drop_prefix

T = TypeVar("T")

START_MS = 1_700_000_000_000
TTL_MS = 1_000  # holds and offers alike
LAPSE_MS = 3_000
MAX_HELD = 3
USERS = ("1", "2", "3")
SLOT_IDS = (1, 2)

users = st.sampled_from(USERS)
slot_ids = st.sampled_from(SLOT_IDS)
quantities = st.integers(1, 3)


@dataclass
class _Slot:
    cap: int
    rem: int
    held: int = 0
    conf: int = 0
    state: str = "open"


@dataclass
class _Hold:
    slot: int
    user: str
    q: int
    status: str
    expires: int


@dataclass
class _Entry:
    slot: int
    user: str
    q: int
    status: str
    lapses: int
    seq: int


class _Model:
    def __init__(self) -> None:
        self.now = START_MS
        self.slots: dict[int, _Slot] = {}
        self.holds: dict[str, _Hold] = {}
        self.expiry: list[tuple[int, str]] = []
        self.entries: dict[str, _Entry] = {}
        self.lapse: list[tuple[int, str]] = []
        self.seq = 0
        self.keys: dict[tuple[int, str, str], tuple[int, str]] = {}
        self.offers = 0

    def line(self, slot_id: int) -> list[str]:
        waiting = [(e.seq, i) for i, e in self.entries.items() if e.slot == slot_id]
        return [i for seq, i in sorted(waiting) if self.entries[i].status == "waiting"]

    def offer_head(self, slot_id: int) -> bool:
        line = self.line(slot_id)
        slot = self.slots[slot_id]
        if not line or slot.state != "open" or slot.rem < self.entries[line[0]].q:
            return False
        entry = self.entries[line[0]]
        entry.status = "offered"
        slot.rem -= entry.q
        slot.held += entry.q
        self.holds[line[0]] = _Hold(slot_id, entry.user, entry.q, "held", self.now + TTL_MS)
        self.expiry.append((self.now + TTL_MS, line[0]))
        self.offers += 1
        return True

    def capacity_freed(self, slot_id: int) -> None:
        while self.offer_head(slot_id):
            pass

    def housekeep(self) -> None:
        while self.expiry and self.expiry[0][0] <= self.now:
            at, hold_id = self.expiry.pop(0)
            h = self.holds[hold_id]
            if h.status == "held" and h.expires == at:
                h.status = "expired"
                self.slots[h.slot].held -= h.q
                self.slots[h.slot].rem += h.q
                self.capacity_freed(h.slot)
        while self.lapse and self.lapse[0][0] <= self.now:
            at, entry_id = self.lapse.pop(0)
            e = self.entries[entry_id]
            if e.status == "waiting" and e.lapses == at:
                e.status = "lapsed"
                self.capacity_freed(e.slot)

    def held_by(self, slot_id: int, user: str) -> int:
        return sum(
            h.q
            for h in self.holds.values()
            if (h.slot, h.user, h.status) == (slot_id, user, "held")
        )

    def join(self, entry_id: str, slot_id: int, user: str, key: str, q: int) -> object:
        self.housekeep()
        known = self.keys.get((slot_id, user, key))
        if known is not None:
            if known[0] != q:
                return IdempotencyMismatch
            return ("replayed", known[1])
        if self.slots[slot_id].state != "open":
            return SlotClosed
        if any(self.entries[i].user == user for i in self.line(slot_id)):
            return WaitingLimit
        self.seq += 1
        self.entries[entry_id] = _Entry(slot_id, user, q, "waiting", self.now + LAPSE_MS, self.seq)
        self.lapse.append((self.now + LAPSE_MS, entry_id))
        self.keys[(slot_id, user, key)] = (q, entry_id)
        self.offer_head(slot_id)
        return ("created", entry_id)

    def leave(self, entry_id: str, user: str) -> object:
        self.housekeep()
        e = self.entries[entry_id]
        if e.user != user:
            return EntryNotFound
        if e.status != "waiting":
            return ("unchanged", e.status)
        e.status = "left"
        self.capacity_freed(e.slot)
        return ("left", "left")

    def hold(self, hold_id: str, slot_id: int, user: str, q: int) -> object:
        self.housekeep()
        slot = self.slots[slot_id]
        if slot.state != "open":
            return SlotClosed
        if slot.rem < q or self.line(slot_id):
            return CapacityExhausted
        if self.held_by(slot_id, user) + q > MAX_HELD:
            return UserHoldLimit
        slot.rem -= q
        slot.held += q
        self.holds[hold_id] = _Hold(slot_id, user, q, "held", self.now + TTL_MS)
        self.expiry.append((self.now + TTL_MS, hold_id))
        return "held"

    def confirm(self, hold_id: str) -> object:
        self.housekeep()
        h = self.holds[hold_id]
        if h.status == "held":
            h.status = "confirmed"
            self.slots[h.slot].held -= h.q
            self.slots[h.slot].conf += h.q
        return h.status

    def cancel(self, hold_id: str) -> object:
        self.housekeep()
        h = self.holds[hold_id]
        slot = self.slots[h.slot]
        if h.status not in ("held", "confirmed"):
            return h.status
        if h.status == "held":
            slot.held -= h.q
        else:
            slot.conf -= h.q
        slot.rem += h.q
        h.status = "cancelled"
        self.capacity_freed(h.slot)
        return "cancelled"

    def update(self, slot_id: int, capacity: int | None, state: str | None) -> object:
        self.housekeep()
        slot = self.slots[slot_id]
        cap = slot.cap if capacity is None else capacity
        if cap < slot.held + slot.conf:
            return CapacityBelowCommitted
        slot.cap, slot.state = cap, state or slot.state
        slot.rem = cap - slot.held - slot.conf
        if slot.state == "open":
            self.capacity_freed(slot_id)
        return "updated"


class WaitlistVersusModel(RuleBasedStateMachine):
    def __init__(self, runner: asyncio.Runner, client: aioredis.Redis) -> None:
        super().__init__()
        self._runner = runner
        self.client = client
        self.prefix = f"tw{uuid.uuid4().hex[:12]}:"
        self.engine = Engine(
            client,
            EngineSettings(
                partitions=1,
                key_prefix=self.prefix,
                hold_ttl_s=TTL_MS // 1000,
                waitlist_offer_ttl_s=TTL_MS // 1000,
                waitlist_ttl_s=LAPSE_MS // 1000,
                max_held_per_user_slot=MAX_HELD,
                housekeeping_batch=10_000,
            ),
        )
        self.model = _Model()
        self.entry_ids: list[str] = []

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T | EngineError:
        try:
            return self._run(coro)
        except EngineError as exc:
            return exc

    def teardown(self) -> None:
        self._run(drop_prefix(self.client, self.prefix))

    @initialize(capacities=st.lists(st.integers(0, 4), min_size=2, max_size=2))
    def build(self, capacities: list[int]) -> None:
        self._run(self.engine.load_partition(0, [], [], epoch="model"))
        for slot_id, capacity in zip(SLOT_IDS, capacities, strict=True):
            self._run(self.engine.create_slot(slot_id, capacity, now_ms=self.model.now))
            self.model.slots[slot_id] = _Slot(capacity, capacity)

    @rule(slot_id=slot_ids, user=users, key=st.sampled_from(["a", "b", "c"]), q=quantities)
    def join(self, slot_id: int, user: str, key: str, q: int) -> None:
        actual = self._call(self.engine.waitlist.join(slot_id, user, key, q, now_ms=self.model.now))
        entry_id = actual[0].entry_id if isinstance(actual, tuple) else ""
        expected = self.model.join(entry_id, slot_id, user, key, q)
        if isinstance(expected, tuple):
            assert isinstance(actual, tuple), actual
            entry, created = actual
            assert (created, entry.entry_id) == (expected[0] == "created", expected[1])
            assert entry.status == self.model.entries[entry.entry_id].status
            if created:
                self.entry_ids.append(entry.entry_id)
        else:
            assert isinstance(actual, expected), actual  # type: ignore[arg-type]

    @precondition(lambda self: self.entry_ids)
    @rule(data=st.data(), wrong_user=st.booleans())
    def leave(self, data: st.DataObject, wrong_user: bool) -> None:
        entry_id = data.draw(st.sampled_from(self.entry_ids))
        owner = self.model.entries[entry_id].user
        user = next(u for u in USERS if u != owner) if wrong_user else owner
        actual = self._call(self.engine.waitlist.leave(entry_id, user, now_ms=self.model.now))
        expected = self.model.leave(entry_id, user)
        if isinstance(expected, tuple):
            assert isinstance(actual, tuple), actual
            assert (actual[0].status, actual[1]) == (expected[1], expected[0] == "left")
        else:
            assert isinstance(actual, expected), actual  # type: ignore[arg-type]

    @rule(slot_id=slot_ids, user=users, q=quantities)
    def hold(self, slot_id: int, user: str, q: int) -> None:
        key = uuid.uuid4().hex
        actual = self._call(self.engine.hold(slot_id, user, key, q, now_ms=self.model.now))
        hold_id = "" if isinstance(actual, EngineError) else actual.hold.hold_id
        expected = self.model.hold(hold_id, slot_id, user, q)
        if expected == "held":
            assert not isinstance(actual, EngineError), actual
        else:
            assert isinstance(actual, expected), actual  # type: ignore[arg-type]

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data(), cancel=st.booleans())
    def confirm_or_cancel(self, data: st.DataObject, cancel: bool) -> None:
        hold_id = data.draw(st.sampled_from(list(self.model.holds)))
        if cancel:
            actual = self._call(self.engine.cancel(hold_id, None, now_ms=self.model.now))
            expected = self.model.cancel(hold_id)
        else:
            actual = self._call(self.engine.confirm(hold_id, None, now_ms=self.model.now))
            expected = self.model.confirm(hold_id)
        if isinstance(actual, EngineError):
            assert isinstance(actual, HoldExpired | HoldCancelled), actual  # they carry the hold
        assert actual.hold.status == expected, (actual, expected)

    @rule(
        slot_id=slot_ids,
        capacity=st.none() | st.integers(0, 6),
        state=st.none() | st.sampled_from(["open", "closed"]),
    )
    def update_slot(self, slot_id: int, capacity: int | None, state: str | None) -> None:
        actual = self._call(
            self.engine.update_slot(slot_id, capacity=capacity, state=state, now_ms=self.model.now)
        )
        expected = self.model.update(slot_id, capacity, state)
        if expected == "updated":
            assert not isinstance(actual, EngineError), actual
        else:
            assert isinstance(actual, expected), actual  # type: ignore[arg-type]

    @rule(ms=st.sampled_from([1, 300, 999, 1_000, 2_500]), sweep=st.booleans())
    def advance_clock(self, ms: int, sweep: bool) -> None:
        self.model.now += ms
        if sweep:
            self._run(self.engine.sweep(0, now_ms=self.model.now))
            self.model.housekeep()

    @invariant()
    def agrees(self) -> None:
        m = self.model
        if not m.slots:
            return
        for slot_id, expected in m.slots.items():
            slot = self._run(self.engine.slot(slot_id))
            assert (slot.capacity, slot.remaining, slot.held, slot.confirmed, slot.state) == (
                expected.cap,
                expected.rem,
                expected.held,
                expected.conf,
                expected.state,
            )
            assert slot.capacity == slot.remaining + slot.held + slot.confirmed
        holds = self._run(self.engine.partition_holds(0))
        assert {h.hold_id: h.status for h in holds} == {i: h.status for i, h in m.holds.items()}
        for slot_id in m.slots:
            for status, counter in (("held", "held"), ("confirmed", "conf")):
                total = sum(h.quantity for h in holds if (h.slot_id, h.status) == (slot_id, status))
                assert total == getattr(m.slots[slot_id], counter)
        entries = {e.entry_id: e for e in self._run(self.engine.waitlist.partition_entries(0))}
        assert {i: e.status for i, e in entries.items()} == {
            i: e.status for i, e in m.entries.items()
        }
        for slot_id in m.slots:
            line = m.line(slot_id)
            for place, entry_id in enumerate(line, 1):
                assert self._run(self.engine.waitlist.get(entry_id)).position == place
            offered = [
                e.seq for e in entries.values() if (e.slot_id, e.status) == (slot_id, "offered")
            ]
            waiting = [entries[i].seq for i in line]
            assert not offered or not waiting or max(offered) < min(waiting)
            slot = m.slots[slot_id]
            if line and slot.state == "open":
                assert entries[line[0]].quantity > slot.rem  # the head never waits if it fits
            counts = self._run(self.engine.waitlist.waiting([slot_id])).get(slot_id)
            units = sum(m.entries[i].q for i in line)
            found = (counts.entries, counts.units) if counts else (0, 0)
            assert found == (len(line), units)
        offers = Counter(
            orjson.loads(fields[b"w"])["i"]
            for _, fields in self._run(self.client.xrange(self.engine.keys.events(0)))
            if b"w" in fields and orjson.loads(fields[b"w"])["st"] == "offered"
        )
        assert all(n == 1 for n in offers.values()), offers
        assert sum(offers.values()) == m.offers


@pytest.mark.timeout(420)
def test_waitlist_matches_model() -> None:
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        client = aioredis.Redis.from_url(redis_url())
        try:
            run_state_machine_as_test(
                lambda: WaitlistVersusModel(runner, client),
                settings=settings(
                    max_examples=150,
                    stateful_step_count=30,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                ),
            )
        finally:
            runner.run(client.aclose())
