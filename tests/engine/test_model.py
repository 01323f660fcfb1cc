"""The engine against a plain Python model of the rules, on the real Redis.

Hypothesis drives random sequences of commands (slots created, holds made and
replayed, extended, confirmed whole or in part, cancelled, capacity changed,
slots closed and reopened, the clock moved, partitions swept) through the engine
and through ``_Model`` below. After every step the engine must agree with the
model on every answer, every hold (``get_hold``), every slot's counters
(``availability``, capacity = remaining + held + confirmed) and the event streams.
An extended hold's earlier expiry entry stays queued and is skipped, as lib.lua does.

The clock is explicit (``now_ms`` on every call). The model keeps the expiry
and finished queues lib.lua describes, so it stays exact whatever the
housekeeping batch: with a batch that always suffices every command expires all
due holds of its partition first; with a batch of one or two, due holds wait
for a later command, a sweep, or a command that touches them (settle)."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
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
    ConfirmMismatch,
    Engine,
    EngineError,
    EngineSettings,
    ExtensionLimit,
    Hold,
    HoldArchived,
    HoldCancelled,
    HoldConfirmed,
    HoldExpired,
    HoldNotFound,
    IdempotencyMismatch,
    Outcome,
    QuantityTooLarge,
    Slot,
    SlotClosed,
    SlotExists,
    SlotNotFound,
    UserHoldLimit,
    slot_of_hold,
)

from ..conftest import redis_url

T = TypeVar("T")

START_MS = 1_700_000_000_000
HOLD_TTL_MS = 1_000
RETENTION_MS = 3_000
PARTITIONS = 3
MAX_HELD = 3
MAX_EXTENSIONS = 2
MAX_LIFE_MS = 2_000  # two lifetimes: the second extension is often past it
USERS = ("u1", "u2")
SLOT_IDS = (1, 2, 3, 4, 5, 6)  # partition = slot % 3: two slots share each partition

users = st.sampled_from(USERS)
slot_ids = st.sampled_from(SLOT_IDS)
quantities = st.integers(1, 3)
states = st.sampled_from(["open", "closed"])


def _partition(slot_id: int) -> int:
    return slot_id % PARTITIONS


# -- the model ----------------------------------------------------------------


@dataclass(frozen=True)
class Refused:
    """The model's refusal: the engine error expected and the attributes it carries."""

    error: type[EngineError]
    attrs: dict[str, Any] = field(default_factory=dict)


NEW_HOLD = object()  # the model expects a new hold; its id comes from the engine


@dataclass
class _Slot:
    slot_id: int
    capacity: int
    remaining: int
    state: str
    label: str
    held: int = 0
    confirmed: int = 0

    def view(self) -> Slot:
        return Slot(
            slot_id=self.slot_id,
            capacity=self.capacity,
            remaining=self.remaining,
            held=self.held,
            confirmed=self.confirmed,
            state=self.state,  # type: ignore[arg-type]
            label=self.label,
        )


@dataclass
class _Hold:
    hold_id: str
    slot_id: int
    user_id: str
    quantity: int
    key: str
    created_at: int
    requested: int = 0  # the key's first quantity (a partial confirm lowers quantity)
    status: str = "held"
    version: int = 1
    confirmed_at: int | None = None
    cancelled_at: int | None = None
    expired_at: int | None = None
    finished_at: int | None = None  # cancelled or expired: forgotten after retention
    forgotten: bool = False
    extensions: int = 0
    extended_to: int | None = None  # expires_at after the last extension

    @property
    def expires_at(self) -> int:
        return self.extended_to or self.created_at + HOLD_TTL_MS

    def view(self) -> Hold:
        return Hold(
            hold_id=self.hold_id,
            slot_id=self.slot_id,
            user_id=self.user_id,
            quantity=self.quantity,
            status=self.status,  # type: ignore[arg-type]
            created_at_ms=self.created_at,
            expires_at_ms=self.expires_at,
            version=self.version,
            confirmed_at_ms=self.confirmed_at,
            cancelled_at_ms=self.cancelled_at,
            expired_at_ms=self.expired_at,
            extensions=self.extensions,
        )


class _Model:
    """The rules of SPEC.md (Domain, Commands) as the engine implements them.

    Housekeeping follows lua/lib.lua: holds fall due in the order they were made
    (one lifetime, a clock that never goes back), so each partition keeps a queue
    of (expires_at, hold) and one of (finished_at, hold); a command first takes up
    to ``batch`` due entries off each, skipping holds that are no longer held.
    """

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.now = START_MS
        self.expiry_queue: dict[int, deque[tuple[int, str]]] = {
            p: deque() for p in range(PARTITIONS)
        }
        self.finished_queue: dict[int, deque[tuple[int, str]]] = {
            p: deque() for p in range(PARTITIONS)
        }
        self.slots: dict[int, _Slot] = {}
        self.holds: dict[str, _Hold] = {}  # creation order: draws stay reproducible
        self.idempotency: dict[tuple[str, int, str], str] = {}  # (user, slot, key) -> hold
        # What the event streams must hold: every hold's states (the first with its
        # idempotency key), every slot's.
        self.hold_events: dict[str, list[tuple[Hold, str | None]]] = {}
        self.slot_events: dict[int, list[tuple[int, int, int, int, str, int]]] = {}

    # housekeeping: what every command does to its partition first

    def housekeep(self, partition: int, *, sweeping: bool = False) -> int:
        """Expire due holds; the sweep also forgets finished ones (lua/expire.lua)."""
        expired = 0
        queue = self.expiry_queue[partition]
        for _ in range(self.batch):
            if not queue or queue[0][0] > self.now:
                break
            at, hold_id = queue.popleft()
            h = self.holds[hold_id]
            # An extended hold's earlier entry is stale: skipped, like a finished hold's.
            if h.status == "held" and not h.forgotten and h.expires_at == at:
                self._expire(h)
                expired += 1
        finished = self.finished_queue[partition]
        for _ in range(self.batch if sweeping else 0):
            if not finished or finished[0][0] > self.now - RETENTION_MS:
                break
            self.holds[finished.popleft()[1]].forgotten = True
        return expired

    def more_due(self, partition: int) -> bool:
        queue, finished = self.expiry_queue[partition], self.finished_queue[partition]
        return (bool(queue) and queue[0][0] <= self.now) or (
            bool(finished) and finished[0][0] <= self.now - RETENTION_MS
        )

    def _expire(self, h: _Hold) -> None:
        self._release_held(h)
        self.slots[h.slot_id].remaining += h.quantity
        h.expired_at = self.now
        self._transition(h, "expired")

    def settle(self, h: _Hold) -> None:
        """A command that touches a hold whose time has come expires it first."""
        if h.status == "held" and h.expires_at <= self.now:
            self._expire(h)

    def _release_held(self, h: _Hold) -> None:
        self.slots[h.slot_id].held -= h.quantity

    def _transition(self, h: _Hold, status: str) -> None:
        h.status = status
        h.version += 1
        if status in ("cancelled", "expired"):
            h.finished_at = self.now
            self.finished_queue[_partition(h.slot_id)].append((self.now, h.hold_id))
        self.hold_events[h.hold_id].append((h.view(), None))

    def held_by(self, user_id: str, slot_id: int) -> int:
        return sum(
            h.quantity
            for h in self.holds.values()
            if h.status == "held" and h.user_id == user_id and h.slot_id == slot_id
        )

    def _slot_event(self, s: _Slot) -> None:
        event = (s.capacity, s.remaining, s.held, s.confirmed, s.state, self.now)
        self.slot_events.setdefault(s.slot_id, []).append(event)

    # commands

    def hold(self, slot_id: int, user_id: str, key: str, quantity: int) -> object:
        self.housekeep(_partition(slot_id))
        bound = self.idempotency.get((user_id, slot_id, key))
        if bound is not None:
            first = self.holds[bound]
            if first.requested != quantity:
                return Refused(IdempotencyMismatch, {"quantity": first.requested})
            if first.forgotten:
                return Refused(HoldArchived, {"hold_id": bound})
            self.settle(first)
            return Outcome(first.view(), changed=False)
        s = self.slots.get(slot_id)
        if s is None:
            return Refused(SlotNotFound, {"slot_id": slot_id})
        if s.state != "open":
            return Refused(SlotClosed, {"slot_id": slot_id})
        if s.remaining < quantity:
            return Refused(CapacityExhausted, {"slot_id": slot_id, "remaining": s.remaining})
        held = self.held_by(user_id, slot_id)
        if held + quantity > MAX_HELD:
            return Refused(UserHoldLimit, {"slot_id": slot_id, "held": held, "limit": MAX_HELD})
        return NEW_HOLD

    def add_hold(self, hold_id: str, slot_id: int, user_id: str, key: str, quantity: int) -> Hold:
        h = _Hold(hold_id, slot_id, user_id, quantity, key, created_at=self.now, requested=quantity)
        self.holds[hold_id] = h
        self.idempotency[(user_id, slot_id, key)] = hold_id
        s = self.slots[slot_id]
        s.remaining -= quantity
        s.held += quantity
        self.hold_events[hold_id] = [(h.view(), key)]
        self.expiry_queue[_partition(slot_id)].append((h.expires_at, hold_id))
        return h.view()

    def _find(self, hold_id: str, user_id: str | None) -> _Hold | Refused:
        h = self.holds.get(hold_id)
        if h is None or h.forgotten or (user_id is not None and h.user_id != user_id):
            return Refused(HoldNotFound, {"hold_id": hold_id})
        return h

    def _hold_command(self, hold_id: str, user_id: str | None) -> _Hold | Refused:
        slot_id = slot_of_hold(hold_id)
        if slot_id is None:  # not one of ours: refused before Redis is asked
            return Refused(HoldNotFound, {"hold_id": hold_id})
        self.housekeep(_partition(slot_id))
        h = self._find(hold_id, user_id)
        if isinstance(h, _Hold):
            self.settle(h)
        return h

    def confirm(self, hold_id: str, user_id: str | None, quantity: int | None = None) -> object:
        h = self._hold_command(hold_id, user_id)
        if isinstance(h, Refused):
            return h
        if h.status == "confirmed":
            if quantity is not None and quantity != h.quantity:
                return Refused(ConfirmMismatch, {"hold": h.view(), "quantity": quantity})
            return Outcome(h.view(), changed=False)
        if h.status == "cancelled":
            return Refused(HoldCancelled, {"hold": h.view()})
        if h.status == "expired":
            return Refused(HoldExpired, {"hold": h.view()})
        if quantity is not None and quantity > h.quantity:
            return Refused(QuantityTooLarge, {"hold_id": hold_id, "held": h.quantity})
        s = self.slots[h.slot_id]
        self._release_held(h)
        if quantity is not None:  # a partial confirm: the rest goes back at once
            s.remaining += h.quantity - quantity
            h.quantity = quantity
        s.confirmed += h.quantity
        h.confirmed_at = self.now
        self._transition(h, "confirmed")
        return Outcome(h.view(), changed=True)

    def extend(self, hold_id: str, user_id: str | None) -> object:
        h = self._hold_command(hold_id, user_id)
        if isinstance(h, Refused):
            return h
        refusals = {"confirmed": HoldConfirmed, "cancelled": HoldCancelled, "expired": HoldExpired}
        if h.status in refusals:
            return Refused(refusals[h.status], {"hold": h.view()})
        latest = h.created_at + MAX_LIFE_MS
        if h.extensions >= MAX_EXTENSIONS or self.now + HOLD_TTL_MS > latest:
            attrs = {"extensions": h.extensions, "latest_expires_at_ms": latest}
            return Refused(ExtensionLimit, {"hold_id": hold_id, **attrs})
        h.extended_to = self.now + HOLD_TTL_MS
        h.extensions += 1
        h.version += 1
        self.expiry_queue[_partition(h.slot_id)].append((h.expires_at, hold_id))
        self.hold_events[hold_id].append((h.view(), None))
        return Outcome(h.view(), changed=True)

    def cancel(self, hold_id: str, user_id: str | None) -> object:
        h = self._hold_command(hold_id, user_id)
        if isinstance(h, Refused):
            return h
        s = self.slots[h.slot_id]
        if h.status == "held":
            self._release_held(h)
        elif h.status == "confirmed":
            s.confirmed -= h.quantity
        else:
            return Outcome(h.view(), changed=False)
        s.remaining += h.quantity
        h.cancelled_at = self.now
        self._transition(h, "cancelled")
        return Outcome(h.view(), changed=True)

    def create_slot(self, slot_id: int, capacity: int, state: str, label: str) -> object:
        self.housekeep(_partition(slot_id))
        if slot_id in self.slots:
            return Refused(SlotExists, {"slot_id": slot_id})
        s = self.slots[slot_id] = _Slot(slot_id, capacity, capacity, state, label)
        self._slot_event(s)
        return s.view()

    def update_slot(self, slot_id: int, capacity: int | None, state: str | None) -> object:
        self.housekeep(_partition(slot_id))
        s = self.slots.get(slot_id)
        if s is None:
            return Refused(SlotNotFound, {"slot_id": slot_id})
        committed = s.held + s.confirmed
        if capacity is not None and capacity < committed:
            return Refused(CapacityBelowCommitted, {"slot_id": slot_id, "committed": committed})
        if capacity is not None:
            s.capacity = capacity
            s.remaining = capacity - committed
        if state is not None:
            s.state = state
        self._slot_event(s)
        return s.view()

    def sweep(self, partition: int) -> tuple[int, bool]:
        return self.housekeep(partition, sweeping=True), self.more_due(partition)


def _plain(hold: Hold) -> Hold:
    """The hold without its idempotency key, which holds read from Redis may not carry."""
    return replace(hold, idempotency_key="")


def _agree(actual: object, expected: object) -> None:
    if isinstance(expected, Refused):
        assert isinstance(actual, expected.error), f"engine: {actual!r}; model: {expected}"
        for name, value in expected.attrs.items():
            got = getattr(actual, name)
            got = _plain(got) if isinstance(got, Hold) else got
            assert got == value, f"{actual!r}.{name}: {got!r}; model: {expected}"
    else:
        if isinstance(actual, Outcome):
            actual = Outcome(_plain(actual.hold), actual.changed)
        assert actual == expected, f"engine: {actual!r}; model: {expected!r}"


# -- the machine --------------------------------------------------------------


class EngineVersusModel(RuleBasedStateMachine):
    """One example: a fresh key prefix on the real Redis, a fresh model."""

    def __init__(self, runner: asyncio.Runner, client: aioredis.Redis) -> None:
        super().__init__()
        self._runner = runner
        self.client = client
        self.prefix = f"tm{uuid.uuid4().hex[:12]}:"
        self.engine: Engine  # and self.model: built by the first rule, which picks the batch
        self.model: _Model
        self._keys_made = 0
        self.refused_keys: list[tuple[str, int, str]] = []  # retried later: must be unbound
        # The engine's event streams as read so far.
        self._stream_pos = ["-"] * PARTITIONS
        self._seen_hold_events: dict[str, list[tuple[Hold, str | None]]] = {}
        self._seen_slot_events: dict[int, list[tuple[int, int, int, int, str, int]]] = {}

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T | EngineError:
        try:
            return self._run(coro)
        except EngineError as exc:
            return exc

    def teardown(self) -> None:
        self._run(drop_prefix(self.client, self.prefix))

    # slots

    def _create_slot(self, slot_id: int, capacity: int, state: str) -> None:
        label = f"slot {slot_id}"
        expected = self.model.create_slot(slot_id, capacity, state, label)
        actual = self._call(
            self.engine.create_slot(
                slot_id, capacity, state=state, attributes={"label": label}, now_ms=self.model.now
            )
        )
        _agree(actual, expected)

    def _update_slot(self, slot_id: int, capacity: int | None, state: str | None) -> None:
        expected = self.model.update_slot(slot_id, capacity, state)
        actual = self._call(
            self.engine.update_slot(slot_id, capacity=capacity, state=state, now_ms=self.model.now)
        )
        _agree(actual, expected)

    def _pick_slot(self, data: st.DataObject) -> int:
        """Mostly a slot that exists; sometimes any id, which may not."""
        known = sorted(self.model.slots)
        choice = st.sampled_from(known) | slot_ids if known else slot_ids
        return data.draw(choice, label="slot")

    @initialize(
        # A batch that always suffices keeps every hold's expiry on time; small ones
        # leave due holds for later commands (and their settle()) and the sweep.
        batch=st.sampled_from([10_000, 2, 1]),
        slots=st.lists(
            st.tuples(slot_ids, st.integers(1, 8)), min_size=1, max_size=4, unique_by=lambda t: t[0]
        ),
    )
    def build(self, batch: int, slots: list[tuple[int, int]]) -> None:
        self.engine = Engine(
            self.client,
            EngineSettings(
                partitions=PARTITIONS,
                key_prefix=self.prefix,
                hold_ttl_s=HOLD_TTL_MS // 1000,
                finished_retention_s=RETENTION_MS // 1000,
                max_held_per_user_slot=MAX_HELD,
                housekeeping_batch=batch,
                hold_max_extensions=MAX_EXTENSIONS,
                hold_max_lifetime_s=MAX_LIFE_MS // 1000,
            ),
        )
        self.model = _Model(batch)
        for p in range(PARTITIONS):
            self._run(self.engine.load_partition(p, [], [], epoch="model"))
        for slot_id, capacity in slots:
            self._create_slot(slot_id, capacity, "open")

    @rule(slot_id=slot_ids, capacity=st.integers(0, 8), state=states)
    def create_slot(self, slot_id: int, capacity: int, state: str) -> None:
        self._create_slot(slot_id, capacity, state)

    @rule(data=st.data(), state=st.none() | states)
    def update_slot(self, data: st.DataObject, state: str | None) -> None:
        """Change capacity (often right around held + confirmed), close or reopen."""
        slot_id = self._pick_slot(data)
        s = self.model.slots.get(slot_id)
        committed = 0 if s is None else s.held + s.confirmed
        near = st.integers(max(0, committed - 2), committed + 1)
        capacity = data.draw(st.none() | st.integers(0, 8) | near, label="capacity")
        self._update_slot(slot_id, capacity, state)

    # holds

    def _hold(self, user_id: str, slot_id: int, key: str, quantity: int) -> None:
        expected = self.model.hold(slot_id, user_id, key, quantity)
        actual = self._call(
            self.engine.hold(slot_id, user_id, key, quantity, now_ms=self.model.now)
        )
        if expected is NEW_HOLD:
            assert isinstance(actual, Outcome), f"engine: {actual!r}; model: a new hold"
            hold_id = actual.hold.hold_id
            assert slot_of_hold(hold_id) == slot_id
            assert hold_id not in self.model.holds
            expected = Outcome(
                self.model.add_hold(hold_id, slot_id, user_id, key, quantity), changed=True
            )
        elif isinstance(expected, Refused) and expected.error not in (
            IdempotencyMismatch,
            HoldArchived,
        ):
            self.refused_keys.append((user_id, slot_id, key))
        _agree(actual, expected)

    @rule(data=st.data(), attempts=st.lists(st.tuples(users, quantities), min_size=1, max_size=4))
    def hold(self, data: st.DataObject, attempts: list[tuple[str, int]]) -> None:
        """A few holds on one slot at one instant, each under a new key: they fall due
        together, more than a small housekeeping batch expires at once."""
        slot_id = self._pick_slot(data)
        for user_id, quantity in attempts:
            self._keys_made += 1
            self._hold(user_id, slot_id, f"k{self._keys_made}", quantity)

    def _pick_hold(self, data: st.DataObject) -> str:
        """Often a hold still held (perhaps due, waiting for housekeeping); else any."""
        every = list(self.model.holds)
        held = [i for i, h in self.model.holds.items() if h.status == "held"]
        choice = st.sampled_from(held) | st.sampled_from(every) if held else st.sampled_from(every)
        return data.draw(choice, label="hold")

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data())
    def replay_hold(self, data: st.DataObject) -> None:
        h = self.model.holds[self._pick_hold(data)]
        quantity = data.draw(st.just(h.requested) | quantities, label="quantity")
        self._hold(h.user_id, h.slot_id, h.key, quantity)

    @precondition(lambda self: self.refused_keys)
    @rule(data=st.data(), quantity=quantities)
    def retry_refused_key(self, data: st.DataObject, quantity: int) -> None:
        """A refused hold binds nothing: its key may be used again."""
        user_id, slot_id, key = data.draw(st.sampled_from(self.refused_keys))
        self._hold(user_id, slot_id, key, quantity)

    def _caller(self, hold_id: str, caller: str) -> str | None:
        owner = self.model.holds[hold_id].user_id
        if caller == "owner":
            return owner
        if caller == "other":
            return next(u for u in USERS if u != owner)
        return None  # an operator

    callers = st.sampled_from(["owner", "owner", "owner", "other", "operator"])

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data(), caller=callers, quantity=st.none() | quantities)
    def confirm(self, data: st.DataObject, caller: str, quantity: int | None) -> None:
        """All of a hold, or a part (perhaps more than it has, or a replay of a part)."""
        hold_id = self._pick_hold(data)
        user_id = self._caller(hold_id, caller)
        expected = self.model.confirm(hold_id, user_id, quantity)
        actual = self._call(
            self.engine.confirm(hold_id, user_id, quantity=quantity, now_ms=self.model.now)
        )
        _agree(actual, expected)

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data(), caller=callers)
    def extend(self, data: st.DataObject, caller: str) -> None:
        hold_id = self._pick_hold(data)
        user_id = self._caller(hold_id, caller)
        expected = self.model.extend(hold_id, user_id)
        actual = self._call(self.engine.lifecycle.extend(hold_id, user_id, now_ms=self.model.now))
        _agree(actual, expected)

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data(), caller=callers)
    def cancel(self, data: st.DataObject, caller: str) -> None:
        hold_id = self._pick_hold(data)
        user_id = self._caller(hold_id, caller)
        expected = self.model.cancel(hold_id, user_id)
        actual = self._call(self.engine.cancel(hold_id, user_id, now_ms=self.model.now))
        _agree(actual, expected)

    @rule(
        slot_id=slot_ids,
        confirm=st.booleans(),
        hold_id=st.sampled_from(["{}-ffffffffffffffff", "{}-not-a-hold", "x{}"]),
    )
    def unknown_hold(self, slot_id: int, confirm: bool, hold_id: str) -> None:
        """A well-formed unknown id still housekeeps its partition; a malformed one does not."""
        hold_id = hold_id.format(slot_id)
        if confirm:
            expected = self.model.confirm(hold_id, "u1")
            actual = self._call(self.engine.confirm(hold_id, "u1", now_ms=self.model.now))
        else:
            expected = self.model.cancel(hold_id, "u1")
            actual = self._call(self.engine.cancel(hold_id, "u1", now_ms=self.model.now))
        _agree(actual, expected)

    @precondition(lambda self: any(h.status == "held" for h in self.model.holds.values()))
    @rule(
        data=st.data(),
        late_ms=st.integers(0, 2),
        command=st.sampled_from(["confirm", "cancel", "replay"]),
    )
    def come_back_late(self, data: st.DataObject, late_ms: int, command: str) -> None:
        """The owner returns at or just after the hold's expiry: whether housekeeping
        got to it or not, the command must find it expired."""
        held = [h for h in self.model.holds.values() if h.status == "held"]
        h = data.draw(st.sampled_from(held), label="hold")
        self.model.now = max(self.model.now, h.expires_at + late_ms)
        if command == "replay":
            self._hold(h.user_id, h.slot_id, h.key, h.quantity)
            return
        model_call = self.model.confirm if command == "confirm" else self.model.cancel
        engine_call = self.engine.confirm if command == "confirm" else self.engine.cancel
        expected = model_call(h.hold_id, h.user_id)
        actual = self._call(engine_call(h.hold_id, h.user_id, now_ms=self.model.now))
        _agree(actual, expected)

    # time

    @rule(
        # Steps around a hold's lifetime, and onto the exact edges of it and of retention.
        ms=st.integers(0, 1_500)
        | st.sampled_from([HOLD_TTL_MS - 1, HOLD_TTL_MS, HOLD_TTL_MS + 1, RETENTION_MS - 1]),
        sweep=st.none() | st.integers(0, PARTITIONS - 1),
    )
    def advance_clock(self, ms: int, sweep: int | None) -> None:
        """Time passes; then perhaps the background sweep runs on one partition."""
        self.model.now += ms
        if sweep is not None:
            expected = self.model.sweep(sweep)
            actual = self._run(self.engine.sweep(sweep, now_ms=self.model.now))
            assert actual == expected, f"engine swept {actual}; model: {expected}"

    # after every step

    @invariant()
    def engine_agrees_with_model(self) -> None:
        self._run(self._check())

    async def _check(self) -> None:
        m = self.model
        slots = await self.engine.availability()
        assert slots == [m.slots[i].view() for i in sorted(m.slots)]
        for s in slots:
            assert s.capacity == s.remaining + s.held + s.confirmed, s
            assert s.remaining >= 0, s
            by_status = {"held": 0, "confirmed": 0}
            for h in m.holds.values():
                if h.slot_id == s.slot_id and h.status in by_status:
                    by_status[h.status] += h.quantity
            assert (s.held, s.confirmed) == (by_status["held"], by_status["confirmed"]), s
        for user_id in USERS:
            for slot_id in m.slots:
                assert m.held_by(user_id, slot_id) <= MAX_HELD
        for h in m.holds.values():
            try:
                stored: Hold | EngineError = await self.engine.get_hold(h.hold_id)
            except HoldNotFound as exc:
                stored = exc
            if h.forgotten:
                assert isinstance(stored, HoldNotFound), f"{stored!r} should be forgotten"
            else:
                assert isinstance(stored, Hold) and _plain(stored) == h.view()
        await self._check_streams()

    async def _check_streams(self) -> None:
        """Every state change is an event, in order; the first carries the idempotency key."""
        m = self.model
        async with self.client.pipeline(transaction=False) as pipe:
            for p in range(PARTITIONS):
                pipe.xrange(self.engine.keys.events(p), min=self._stream_pos[p])
            replies = await pipe.execute()
        for p, events in enumerate(replies):
            for entry_id, fields in events:
                self._stream_pos[p] = "(" + _text(entry_id)
                if b"h" in fields:
                    event = Hold.from_stored(fields[b"h"])
                    key = orjson.loads(fields[b"h"]).get("k")
                    seen = self._seen_hold_events.setdefault(event.hold_id, [])
                    seen.append((_plain(event), key))
                else:
                    s = orjson.loads(fields[b"s"])
                    self._seen_slot_events.setdefault(int(s["id"]), []).append(
                        (s["cap"], s["rem"], s["held"], s["conf"], s["state"], s["t"])
                    )
        assert self._seen_hold_events == m.hold_events
        assert self._seen_slot_events == m.slot_events


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def drop_prefix(client: aioredis.Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)


# Passes in well under a minute; a failure is shrunk to a short sequence first, which
# Hypothesis may spend up to five minutes on: that report is worth the wait.
@pytest.mark.timeout(420)
def test_engine_matches_model() -> None:
    # Hypothesis state machines are synchronous: run the engine on a private loop.
    # The loop factory keeps the Runner from replacing the session's current loop.
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        client = aioredis.Redis.from_url(redis_url())
        try:
            run_state_machine_as_test(
                lambda: EngineVersusModel(runner, client),
                settings=settings(
                    max_examples=200,
                    stateful_step_count=30,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                ),
            )
        finally:
            runner.run(client.aclose())
