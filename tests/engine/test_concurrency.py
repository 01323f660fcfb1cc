"""Many calls in flight at once, on the real Redis and on the private cluster.

Each test runs with the engine's coalescer off (every call takes its own pooled
connection: at least 20 are open at once) and on (the calls of one loop turn go
out as one pipeline), since production uses the latter and the pool is what the
former stresses.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from engine import (
    CapacityBelowCommitted,
    CapacityExhausted,
    Engine,
    EngineSettings,
    Hold,
    HoldCancelled,
    HoldExpired,
    IdempotencyMismatch,
    Outcome,
    Slot,
    UserHoldLimit,
)

from ..conftest import redis_url

POOL_SIZE = 32

coalescing = pytest.mark.parametrize("coalesce", [False, True], ids=["per-call", "coalesced"])


@dataclass
class Storm:
    """A client with a bounded pool and a name, so the server can count its connections."""

    backend: str
    client: Any
    name: str
    # The cluster client raises MaxConnectionsError instead of waiting for a free
    # connection, so calls to it queue here, as they would on a BlockingConnectionPool.
    gate: asyncio.Semaphore | None
    prefixes: list[str] = field(default_factory=list)

    async def engine(self, **overrides: Any) -> Engine:
        prefix = f"tc{uuid.uuid4().hex[:10]}:"
        self.prefixes.append(prefix)
        engine = Engine(
            self.client, EngineSettings(**{"partitions": 4, "key_prefix": prefix, **overrides})
        )
        for p in range(engine.settings.partitions):
            await engine.load_partition(p, [], [], epoch="test")
        return engine

    async def _gated(self, call: Callable[[], Awaitable[Any]]) -> Any:
        if self.gate is None:
            return await call()
        async with self.gate:
            return await call()

    async def gather(self, calls: Iterable[Callable[[], Awaitable[Any]]]) -> list[Any]:
        """Start every call at once; each answer is a result or the exception raised."""
        return await asyncio.gather(*(self._gated(c) for c in calls), return_exceptions=True)

    async def connections(self) -> int:
        """Connections of this client that the server(s) see open."""
        if self.backend == "redis":
            clients = await self.client.client_list()
        else:
            per_node = await self.client.client_list(target_nodes=RedisCluster.ALL_NODES)
            clients = [c for node in per_node.values() for c in node]
        return sum(1 for c in clients if c.get("name") == self.name)

    async def hold_events(self, engine: Engine, partition: int) -> list[Hold]:
        entries = await self.client.xrange(engine.keys.events(partition))
        return [Hold.from_stored(fields[b"h"]) for _, fields in entries if b"h" in fields]

    async def slot_events(self, engine: Engine, partition: int) -> int:
        entries = await self.client.xrange(engine.keys.events(partition))
        return sum(1 for _, fields in entries if b"s" in fields)


@pytest.fixture(params=["redis", "cluster"])
async def storm(request: pytest.FixtureRequest) -> AsyncIterator[Storm]:
    name = f"storm-{uuid.uuid4().hex[:8]}"
    if request.param == "redis":
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url(), max_connections=POOL_SIZE, timeout=20, client_name=name
        )
        s = Storm("redis", aioredis.Redis.from_pool(pool), name, gate=None)
    else:
        ports = request.getfixturevalue("cluster_ports")
        client = RedisCluster(
            host="127.0.0.1", port=ports[0], max_connections=POOL_SIZE, client_name=name
        )
        s = Storm("cluster", client, name, gate=asyncio.Semaphore(POOL_SIZE))
    yield s
    if s.backend == "redis":  # the private cluster dies with the session
        for prefix in s.prefixes:
            keys = [k async for k in s.client.scan_iter(match=f"{prefix}*", count=1000)]
            if keys:
                await s.client.delete(*keys)
    await s.client.aclose()


def _split(results: list[Any]) -> Counter[str]:
    return Counter(type(r).__name__ for r in results)


# -- (a) capacity ---------------------------------------------------------------


@coalescing
async def test_500_holds_on_37_units_sell_exactly_37(storm: Storm, coalesce: bool) -> None:
    engine = await storm.engine(coalesce=coalesce)
    slot_id = 9
    await engine.create_slot(slot_id, 37)

    results = await storm.gather(
        partial(engine.hold, slot_id, f"user-{i % 100}", f"key-{i}") for i in range(500)
    )

    won = [r for r in results if isinstance(r, Outcome)]
    lost = [r for r in results if isinstance(r, CapacityExhausted)]
    assert (len(won), len(lost)) == (37, 463), _split(results)
    assert all(o.changed and o.hold.status == "held" and o.hold.quantity == 1 for o in won)
    assert len({o.hold.hold_id for o in won}) == 37
    assert {e.remaining for e in lost} == {0}
    if not coalesce:
        assert await storm.connections() >= 20

    slot = await engine.slot(slot_id)
    assert (slot.capacity, slot.remaining, slot.held, slot.confirmed) == (37, 0, 37, 0)
    partition = engine.keys.partition_of(slot_id)
    events = await storm.hold_events(engine, partition)
    assert len(events) == 37
    assert {e.hold_id for e in events} == {o.hold.hold_id for o in won}
    assert {(e.status, e.version) for e in events} == {("held", 1)}
    assert await storm.slot_events(engine, partition) == 1  # the slot's creation


# -- (b) idempotency ------------------------------------------------------------


@coalescing
async def test_200_copies_of_one_key_make_one_hold(storm: Storm, coalesce: bool) -> None:
    engine = await storm.engine(coalesce=coalesce)
    slot_id = 10
    await engine.create_slot(slot_id, 5)

    results = await storm.gather(
        partial(engine.hold, slot_id, "alice", "the-one-key") for _ in range(200)
    )

    assert all(isinstance(r, Outcome) for r in results), _split(results)
    assert len({r.hold.hold_id for r in results}) == 1
    assert sum(r.changed for r in results) == 1
    slot = await engine.slot(slot_id)
    assert (slot.remaining, slot.held, slot.confirmed) == (4, 1, 0)
    events = await storm.hold_events(engine, engine.keys.partition_of(slot_id))
    assert [(e.hold_id, e.status) for e in events] == [(results[0].hold.hold_id, "held")]


@coalescing
async def test_200_copies_of_one_key_with_two_quantities(storm: Storm, coalesce: bool) -> None:
    """The first copy to arrive fixes the quantity; copies asking another are refused."""
    engine = await storm.engine(coalesce=coalesce)
    slot_id = 11
    await engine.create_slot(slot_id, 5)

    results = await storm.gather(
        partial(engine.hold, slot_id, "bob", "k", 1 + i % 2) for i in range(200)
    )

    holds = [r for r in results if isinstance(r, Outcome)]
    refused = [r for r in results if isinstance(r, IdempotencyMismatch)]
    assert len(holds) + len(refused) == 200, _split(results)
    assert len({o.hold.hold_id for o in holds}) == 1
    assert sum(o.changed for o in holds) == 1
    quantity = holds[0].hold.quantity
    assert len(holds) == 100 and all(o.hold.quantity == quantity for o in holds)
    assert {e.quantity for e in refused} == {quantity}
    slot = await engine.slot(slot_id)
    assert (slot.remaining, slot.held) == (5 - quantity, quantity)


# -- (c) a mixed storm ----------------------------------------------------------

CAPACITIES = {1: 12, 2: 20, 3: 8, 5: 15}  # slots 1 and 5 share partition 1
FLOWS = ("confirm", "cancel", "confirm_cancel", "race", "double_confirm", "replay", "abandon")


@dataclass
class Ledger:
    """What callers were told, to hold against the final state."""

    created: set[str] = field(default_factory=set)
    answers: list[Outcome] = field(default_factory=list)  # every command that answered
    final: dict[str, str] = field(default_factory=dict)  # the status a flow left its hold in
    admin_answers: Counter[str] = field(default_factory=Counter)


async def _flow(engine: Engine, storm: Storm, rng: random.Random, n: int, ledger: Ledger) -> None:
    kind = rng.choice(FLOWS)
    slot_id = rng.choice(list(CAPACITIES))
    user = f"user-{rng.randrange(30)}"
    quantity = rng.randint(1, 3)
    start = rng.random() * 0.6  # arrivals spread out, so cancelled units are sold again
    jitter = [rng.random() * 0.02 for _ in range(2)]
    late = rng.random() < 0.1

    async def hold() -> Outcome | None:
        copies = 3 if kind == "replay" else 1
        answers = await storm.gather(
            partial(engine.hold, slot_id, user, f"key-{n}", quantity) for _ in range(copies)
        )
        outcomes = [a for a in answers if isinstance(a, Outcome)]
        for a in answers:
            if not isinstance(a, Outcome):
                # Refusals are fine in a storm; anything else is a failure.
                assert isinstance(a, CapacityExhausted | UserHoldLimit), a
        if not outcomes:
            return None
        assert len({o.hold.hold_id for o in outcomes}) == 1
        assert sum(o.changed for o in outcomes) == 1
        ledger.created.add(outcomes[0].hold.hold_id)
        ledger.answers.extend(outcomes)
        return outcomes[0]

    async def command(name: str, hold_id: str) -> Outcome | Exception:
        fn = engine.confirm if name == "confirm" else engine.cancel
        answer: Outcome | Exception = (await storm.gather([partial(fn, hold_id, user)]))[0]
        if isinstance(answer, Outcome):
            ledger.answers.append(answer)
        else:
            assert isinstance(answer, HoldExpired | HoldCancelled), answer
        return answer

    await asyncio.sleep(start)
    made = await hold()
    if made is None or kind == "abandon":
        return
    hold_id = made.hold.hold_id
    # Some callers come back after the hold's lifetime (1 s): too late to confirm.
    await asyncio.sleep(1.1 if late else jitter[0])
    if kind in ("confirm", "replay"):
        answer = await command("confirm", hold_id)
        if late:
            assert isinstance(answer, HoldExpired)
        ledger.final[hold_id] = "confirmed" if isinstance(answer, Outcome) else "expired"
    elif kind == "cancel":
        answer = await command("cancel", hold_id)
        assert isinstance(answer, Outcome)
        # A caller back after the lifetime finds the hold expired: nothing to release.
        assert answer.hold.status in ({"expired"} if late else {"cancelled", "expired"})
        ledger.final[hold_id] = answer.hold.status
    elif kind == "confirm_cancel":
        await command("confirm", hold_id)
        await asyncio.sleep(jitter[1])
        answer = await command("cancel", hold_id)
        assert isinstance(answer, Outcome)
        ledger.final[hold_id] = answer.hold.status
    elif kind == "race":
        # Whichever lands first, the cancel wins (a booking can be cancelled too).
        confirmed, cancelled = await asyncio.gather(
            command("confirm", hold_id), command("cancel", hold_id)
        )
        assert isinstance(cancelled, Outcome)
        if isinstance(confirmed, HoldCancelled):
            assert cancelled.hold.version == 2  # the cancel came first
        ledger.final[hold_id] = cancelled.hold.status
    elif kind == "double_confirm":
        first, second = await asyncio.gather(
            command("confirm", hold_id), command("confirm", hold_id)
        )
        if isinstance(first, Outcome) and isinstance(second, Outcome):
            assert first.changed != second.changed  # exactly one of them confirmed it
            ledger.final[hold_id] = "confirmed"
        else:
            assert isinstance(first, HoldExpired) and isinstance(second, HoldExpired)
            ledger.final[hold_id] = "expired"


async def _admin(engine: Engine, rng: random.Random, ledger: Ledger) -> None:
    """Operators change capacity while the storm runs; lowering may be refused."""
    for _ in range(10):
        await asyncio.sleep(rng.random() * 0.1)
        slot_id = rng.choice(list(CAPACITIES))
        try:
            await engine.update_slot(slot_id, capacity=rng.randint(0, 25))
            ledger.admin_answers["updated"] += 1
        except CapacityBelowCommitted:
            ledger.admin_answers["refused"] += 1


async def _sweeper(engine: Engine) -> None:
    for _ in range(8):
        await asyncio.sleep(0.15)
        for p in range(engine.settings.partitions):
            await engine.sweep(p)


async def _check_books(storm: Storm, engine: Engine, ledger: Ledger) -> dict[str, Hold]:
    """Counters add up, match the holds, and the streams tell the same story."""
    holds = {hold_id: await engine.get_hold(hold_id) for hold_id in ledger.created}
    slots: list[Slot] = [await engine.slot(slot_id) for slot_id in CAPACITIES]
    for s in slots:
        assert s.capacity == s.remaining + s.held + s.confirmed, s
        assert s.remaining >= 0, s
        mine = [h for h in holds.values() if h.slot_id == s.slot_id]
        assert s.held == sum(h.quantity for h in mine if h.status == "held"), s
        assert s.confirmed == sum(h.quantity for h in mine if h.status == "confirmed"), s

    history: dict[str, list[Hold]] = {}
    for p in range(engine.settings.partitions):
        for event in await storm.hold_events(engine, p):
            history.setdefault(event.hold_id, []).append(event)
    assert set(history) == ledger.created
    for hold_id, events in history.items():
        assert [e.version for e in events] == list(range(1, len(events) + 1)), events
        last, now = events[-1], holds[hold_id]
        assert (last.status, last.version, last.quantity, last.user_id) == (
            now.status,
            now.version,
            now.quantity,
            now.user_id,
        )
    told = {(a.hold.hold_id, a.hold.version): a.hold.status for a in ledger.answers}
    streamed = {(e.hold_id, e.version): e.status for events in history.values() for e in events}
    assert told.items() <= streamed.items()  # every answer given is on the record
    return holds


@coalescing
async def test_mixed_storm_keeps_the_books(storm: Storm, coalesce: bool) -> None:
    engine = await storm.engine(coalesce=coalesce, hold_ttl_s=1)
    for slot_id, capacity in CAPACITIES.items():
        await engine.create_slot(slot_id, capacity)
    rng = random.Random(f"storm-{coalesce}")
    ledger = Ledger()

    await asyncio.gather(
        *(_flow(engine, storm, random.Random(rng.random()), n, ledger) for n in range(300)),
        _admin(engine, random.Random(rng.random()), ledger),
        _sweeper(engine),
    )

    assert len(ledger.created) >= 30  # the storm did sell
    holds = await _check_books(storm, engine, ledger)
    # Each hold is as its caller was last told: no confirmation lost, no late confirm.
    assert {h: holds[h].status for h in ledger.final} == ledger.final

    # Let every remaining hold run out: nothing stays held, the books still add up.
    seconds, _ = await storm.client.time()
    for p in range(engine.settings.partitions):
        while (await engine.sweep(p, now_ms=(seconds + 10) * 1000))[1]:
            pass
    holds = await _check_books(storm, engine, ledger)
    assert all(h.status != "held" for h in holds.values())
    for slot_id in CAPACITIES:
        assert (await engine.slot(slot_id)).held == 0
