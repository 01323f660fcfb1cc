"""Hold groups against a plain Python model, on the real Redis.

Hypothesis drives random sequences of single holds, groups (made, refused,
replayed, confirmed, cancelled, left half-made by a "dead" process, expired) and
clock moves through the engine and ``_Model``. After every step the groups'
sweep and the expiry sweep run (as the worker does), then every slot's counters,
``capacity = remaining + held + confirmed``, every group's status and "a group
is all held or none" (every member in its group's state) are checked.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

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
    CapacityExhausted,
    Engine,
    EngineError,
    EngineSettings,
    GroupCancelled,
    GroupExpired,
    GroupItem,
    GroupNotFound,
    GroupOutcome,
    GroupRefused,
    HoldInGroup,
    Outcome,
    SlotClosed,
    SlotNotFound,
    UserHoldLimit,
)

from ..conftest import redis_url
from .test_model import drop_prefix

T = TypeVar("T")

START_MS = 1_800_000_000_000
TTL_MS = 1_000
PENDING_MS = 100  # confirm needs 2 x this left; a half-made group goes after 2 x this
PARTITIONS = 3
MAX_HELD = 4
SLOT_IDS = (1, 2, 3, 4, 5)
USERS = ("u1", "u2")

users = st.sampled_from(USERS)
items_strategy = st.lists(
    st.tuples(st.sampled_from((*SLOT_IDS, 9)), st.integers(1, 3)),
    min_size=1,
    max_size=3,
    unique_by=lambda t: t[0],
)


@dataclass
class _Hold:
    slot_id: int
    user_id: str
    quantity: int
    status: str
    expires_at: int
    release_at: int | None = None  # a part of a half-made group: the group sweep's time


@dataclass
class _Group:
    user_id: str
    key: str
    status: str  # held, confirmed, cancelled (expired is derived)
    expires_at: int
    members: list[str] = field(default_factory=list)


@dataclass
class _Slot:
    capacity: int
    state: str = "open"


class _Model:
    def __init__(self, slots: dict[int, _Slot]) -> None:
        self.now = START_MS
        self.slots = slots
        self.holds: dict[str, _Hold] = {}
        self.groups: dict[str, _Group] = {}

    def expire_due(self) -> None:
        for h in self.holds.values():
            if h.status == "held" and h.expires_at <= self.now:
                h.status = "expired"

    def release_orphans(self) -> None:
        for h in self.holds.values():
            if h.status == "held" and h.release_at is not None and h.release_at <= self.now:
                h.status = "cancelled"

    def used(self, slot_id: int, status: str, user_id: str | None = None) -> int:
        return sum(
            h.quantity
            for h in self.holds.values()
            if h.slot_id == slot_id and h.status == status and user_id in (None, h.user_id)
        )

    def remaining(self, slot_id: int) -> int:
        s = self.slots[slot_id]
        return s.capacity - self.used(slot_id, "held") - self.used(slot_id, "confirmed")

    def refusal(self, slot_id: int, user_id: str, quantity: int) -> type | None:
        if slot_id not in self.slots:
            return SlotNotFound
        if self.slots[slot_id].state != "open":
            return SlotClosed
        if self.remaining(slot_id) < quantity:
            return CapacityExhausted
        if self.used(slot_id, "held", user_id) + quantity > MAX_HELD:
            return UserHoldLimit
        return None

    def group_status(self, group: _Group) -> str:
        if group.status == "held" and group.expires_at <= self.now:
            return "expired"
        return group.status


class GroupsVersusModel(RuleBasedStateMachine):
    def __init__(self, runner: asyncio.Runner, client: aioredis.Redis) -> None:
        super().__init__()
        self._runner = runner
        self.client = client
        self.prefix = f"tgm{uuid.uuid4().hex[:12]}:"
        self.engine: Engine
        self.model: _Model
        self._keys = 0

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T | EngineError:
        try:
            return self._run(coro)
        except EngineError as exc:
            return exc

    def _key(self) -> str:
        self._keys += 1
        return f"k{self._keys}"

    def teardown(self) -> None:
        self._run(drop_prefix(self.client, self.prefix))

    @initialize(
        caps=st.lists(st.integers(0, 6), min_size=len(SLOT_IDS), max_size=len(SLOT_IDS)),
        closed=st.sets(st.sampled_from(SLOT_IDS), max_size=1),
    )
    def build(self, caps: list[int], closed: set[int]) -> None:
        self.engine = Engine(
            self.client,
            EngineSettings(
                partitions=PARTITIONS,
                key_prefix=self.prefix,
                hold_ttl_s=TTL_MS // 1000,
                max_held_per_user_slot=MAX_HELD,
                group_pending_ms=PENDING_MS,
            ),
        )
        slots = {}
        for p in range(PARTITIONS):
            self._run(self.engine.load_partition(p, [], [], epoch="model"))
        for slot_id, cap in zip(SLOT_IDS, caps, strict=True):
            state = "closed" if slot_id in closed else "open"
            self._run(self.engine.create_slot(slot_id, cap, state=state, now_ms=START_MS))
            slots[slot_id] = _Slot(cap, state)
        self.model = _Model(slots)

    # -- single holds ----------------------------------------------------------------

    @rule(user=users, slot_id=st.sampled_from(SLOT_IDS), quantity=st.integers(1, 3))
    def single_hold(self, user: str, slot_id: int, quantity: int) -> None:
        m = self.model
        m.expire_due()
        want = m.refusal(slot_id, user, quantity)
        got = self._call(self.engine.hold(slot_id, user, self._key(), quantity, now_ms=m.now))
        if want is not None:
            assert type(got) is want, got
            return
        assert isinstance(got, Outcome), got
        m.holds[got.hold.hold_id] = _Hold(slot_id, user, quantity, "held", m.now + TTL_MS)

    @precondition(lambda self: any(h.release_at is None for h in self.model.holds.values()))
    @rule(data=st.data(), confirm=st.booleans())
    def single_change(self, data: st.DataObject, confirm: bool) -> None:
        """Confirm or cancel a hold through the single-hold route: members refuse."""
        m = self.model
        m.expire_due()
        hold_id = data.draw(st.sampled_from(sorted(self.model.holds)))
        h = m.holds[hold_id]
        call = self.engine.confirm if confirm else self.engine.cancel
        got = self._call(call(hold_id, h.user_id, now_ms=m.now))
        if any(hold_id in g.members for g in m.groups.values()) or h.release_at is not None:
            assert isinstance(got, HoldInGroup), got
            return
        if confirm and h.status == "held":
            h.status = "confirmed"
        elif not confirm and h.status in ("held", "confirmed"):
            h.status = "cancelled"

    # -- groups ----------------------------------------------------------------------

    @rule(user=users, items=items_strategy)
    def group_hold(self, user: str, items: list[tuple[int, int]]) -> None:
        m = self.model
        m.expire_due()
        key = self._key()
        refusals = [m.refusal(s, user, q) for s, q in items]
        got = self._call(
            self.engine.groups.hold(user, key, [GroupItem(s, q) for s, q in items], now_ms=m.now)
        )
        first = next((n for n, r in enumerate(refusals) if r is not None), None)
        if first is not None:
            assert isinstance(got, GroupRefused), got
            assert (got.index, got.slot_id) == (first, items[first][0])
            assert type(got.cause) is refusals[first]
            return
        assert isinstance(got, GroupOutcome) and got.changed, got
        g = got.group
        assert g.status == "held" and [(h.slot_id, h.quantity) for h in g.holds] == items
        for h in g.holds:
            m.holds[h.hold_id] = _Hold(h.slot_id, user, h.quantity, "held", m.now + TTL_MS)
        m.groups[g.group_id] = _Group(
            user, key, "held", m.now + TTL_MS, [h.hold_id for h in g.holds]
        )
        # A replay answers the same group and changes nothing.
        again = self._run(
            self.engine.groups.hold(user, key, [GroupItem(s, q) for s, q in items], now_ms=m.now)
        )
        assert again.group.group_id == g.group_id and not again.changed

    @rule(user=users, items=items_strategy)
    def half_made_group(self, user: str, items: list[tuple[int, int]]) -> None:
        """A process that began a group and made its first part, then died."""
        m = self.model
        m.expire_due()
        groups = self.engine.groups
        outcome = self._call(self._begin_and_die(user, items))
        slot_id, quantity = items[0]
        if isinstance(outcome, str):
            m.holds[outcome] = _Hold(
                slot_id, user, quantity, "held", m.now + TTL_MS, m.now + 2 * PENDING_MS
            )
        else:
            assert type(outcome) is m.refusal(slot_id, user, quantity), outcome
        assert groups is self.engine.groups

    async def _begin_and_die(self, user: str, items: list[tuple[int, int]]) -> str:
        groups = self.engine.groups
        made: list[str] = []

        async def die(group: Any, user_id: str, now_ms: int | None) -> Any:
            deadline = str(group.created_at_ms + PENDING_MS)
            hold = await groups._make_part(group, group.members[0], user_id, deadline, now_ms)
            made.append(hold.hold_id)
            raise _Died

        groups._make = die  # type: ignore[method-assign]
        try:
            await groups.hold(
                user, self._key(), [GroupItem(s, q) for s, q in items], now_ms=self.model.now
            )
        except _Died:
            return made[0]
        finally:
            del groups._make  # back to the class's method
        raise AssertionError("the dead process answered")

    @precondition(lambda self: bool(self.model.groups))
    @rule(data=st.data(), confirm=st.booleans(), stranger=st.booleans())
    def group_change(self, data: st.DataObject, confirm: bool, stranger: bool) -> None:
        m = self.model
        m.expire_due()
        group_id = data.draw(st.sampled_from(sorted(m.groups)))
        g = m.groups[group_id]
        caller = next(u for u in USERS if u != g.user_id) if stranger else g.user_id
        call = self.engine.groups.confirm if confirm else self.engine.groups.cancel
        got = self._call(call(group_id, caller, now_ms=m.now))
        if stranger:
            assert isinstance(got, GroupNotFound), got
            return
        status = m.group_status(g)
        if confirm:
            closing = status == "held" and m.now + 2 * PENDING_MS >= g.expires_at
            if closing or status == "expired":
                assert isinstance(got, GroupExpired), got
            elif status == "cancelled":
                assert isinstance(got, GroupCancelled), got
            else:
                assert isinstance(got, GroupOutcome), got
                assert got.changed == (status == "held")
                self._set(g, "confirmed")
        else:
            assert isinstance(got, GroupOutcome), got
            assert got.changed == (status in ("held", "confirmed"))
            if got.changed:
                self._set(g, "cancelled")

    def _set(self, g: _Group, status: str) -> None:
        g.status = status
        for hold_id in g.members:
            self.model.holds[hold_id].status = status

    @rule(ms=st.sampled_from([1, 50, 99, 150, 200, 400, 800, 900, 1_200]))
    def advance_clock(self, ms: int) -> None:
        self.model.now += ms

    # -- after every step ------------------------------------------------------------

    @invariant()
    def engine_agrees_with_model(self) -> None:
        if not hasattr(self, "model"):
            return
        self._run(self._check())

    async def _check(self) -> None:
        m, engine = self.model, self.engine
        # The worker's duties: half-made groups undone, due holds expired.
        for p in range(PARTITIONS):
            await engine.groups.sweep(p, now_ms=m.now)
            more = True
            while more:
                _, more = await engine.sweep(p, now_ms=m.now)
        m.release_orphans()
        m.expire_due()
        for slot_id, s in m.slots.items():
            slot = await engine.slot(slot_id)
            assert slot.capacity == slot.remaining + slot.held + slot.confirmed
            assert (slot.held, slot.confirmed) == (
                m.used(slot_id, "held"),
                m.used(slot_id, "confirmed"),
            ), slot_id
            assert slot.capacity == s.capacity
        for group_id, g in m.groups.items():
            got = await engine.groups.get(group_id, g.user_id, now_ms=m.now)
            status = m.group_status(g)
            assert got.status == status
            # All held or none: every member is in its group's state.
            assert {h.status for h in got.holds} == {status}, (status, got.holds)
            assert [h.hold_id for h in got.holds] == g.members


class _Died(Exception):
    pass


@pytest.mark.timeout(420)
def test_groups_match_model() -> None:
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        client = aioredis.Redis.from_url(redis_url())
        try:
            run_state_machine_as_test(
                lambda: GroupsVersusModel(runner, client),
                settings=settings(
                    max_examples=100,
                    stateful_step_count=25,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                ),
            )
        finally:
            runner.run(client.aclose())
