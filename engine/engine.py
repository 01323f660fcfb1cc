"""The reservation engine: typed calls over the Lua scripts.

No HTTP words and no environment here; the caller passes a redis.asyncio client
(single server or cluster) and EngineSettings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from . import batch, errors, lifecycle
from .client import RedisClient
from .coalesce import Coalescer
from .groups import Groups
from .keys import EPOCH_FIELD, KeySchema, check_slot_id, check_user_id, new_hold_id, slot_of_hold
from .models import Hold, Outcome, Slot
from .replicated import run_replicated
from .replies import (
    SLOT_FIELDS,
    chunks,
    redis_errors,
    refusal,
    slot_from_fields,
    slots_from_hash,
    text,
    written,
)
from .scripts import Scripts, clock_arg, housekeeping_args
from .settings import EngineSettings
from .waitlist import Waitlist
from .waitlist_models import WaitEntry

__all__ = ["Engine"]

_LOAD_CHUNK = 500


class Engine:
    def __init__(
        self,
        redis: RedisClient,
        settings: EngineSettings | None = None,
        *,
        read_redis: RedisClient | None = None,
    ) -> None:
        """``redis`` takes commands; ``read_redis`` (a replica) may serve reads."""
        self.settings = settings or EngineSettings()
        self.keys = KeySchema(self.settings.key_prefix, self.settings.partitions)
        # Kept untyped: redis-py's stubs let only a single-server client run a
        # script (AsyncScript's client=), though RedisCluster runs them as well.
        self._redis: Any = redis
        self._read: Any = read_redis if read_redis is not None else redis
        self._scripts = Scripts(redis)
        self._coalescer = Coalescer(redis) if self.settings.coalesce else None
        self._hold_ttl_ms = str(self.settings.hold_ttl_s * 1000)
        self._idempotency_ttl_ms = str(self.settings.idempotency_ttl_s * 1000)
        self._batch, self._retention_ms = housekeeping_args(self.settings)
        self._max_held = str(self.settings.max_held_per_user_slot)
        self.waitlist = Waitlist(redis, self._read, self._scripts, self.keys, self.settings)
        self.groups = Groups(redis, self.keys, self._scripts, self.settings)
        self.lifecycle = lifecycle.Lifecycle(self._hold_command, self._scripts, self.settings)
        self.batch = batch.HoldBatch(self._run, self._scripts, self.keys, self.settings)

    # -- commands -------------------------------------------------------------

    async def hold(
        self,
        slot_id: int,
        user_id: str,
        idempotency_key: str,
        quantity: int = 1,
        *,
        now_ms: int | None = None,
    ) -> Outcome:
        """Reserve ``quantity`` on a slot; a repeated key returns the first hold."""
        keys, args = self._hold_call(slot_id, user_id, idempotency_key, quantity, now_ms)
        partition = self.keys.partition_of(slot_id)
        async with redis_errors():
            reply = await self._run(self._scripts.hold, keys, args)
        tag = text(reply[0])
        if tag == "created":
            return Outcome(Hold.from_stored(reply[1]), changed=True)
        if tag == "replayed":
            return Outcome(Hold.from_stored(reply[1]), changed=False)
        raise self._refusal(tag, reply, partition=partition, slot_id=slot_id)

    def _hold_call(
        self,
        slot_id: int,
        user_id: str,
        key: str,
        quantity: int,
        now_ms: int | None,
        hold_id: str = "",
    ) -> tuple[list[str], list[str]]:
        if not 1 <= quantity <= self.settings.max_quantity:
            raise ValueError(f"quantity must be 1..{self.settings.max_quantity}")
        check_slot_id(slot_id)
        check_user_id(user_id)
        if not key:
            raise ValueError("idempotency_key must not be empty")
        keys = [
            *self.keys.partition(self.keys.partition_of(slot_id)),
            self.keys.idempotency(slot_id, user_id, key),
        ]
        args = [
            clock_arg(now_ms), self._batch, self._retention_ms, str(slot_id), user_id,
            str(quantity), hold_id or new_hold_id(slot_id), self._hold_ttl_ms,
            self._idempotency_ttl_ms, self._max_held, key,
        ]  # fmt: skip
        return keys, args

    def hold_command(
        self, slot_id: int, user_id: str, key: str, *, now_ms: int | None = None, hold_id: str = ""
    ) -> list[Any]:
        """The command hold() sends for a hold of one: what bench/script_cost.py replays."""
        keys, args = self._hold_call(slot_id, user_id, key, 1, now_ms, hold_id)
        return self._scripts.command(self._scripts.hold, keys, args)

    async def confirm(
        self,
        hold_id: str,
        user_id: str | None,
        *,
        quantity: int | None = None,
        now_ms: int | None = None,
    ) -> Outcome:
        """Confirm a live hold, all of it or ``quantity`` (the rest goes back to the
        slot: engine/lifecycle.py). ``user_id=None`` skips the ownership check."""
        part = "" if quantity is None else str(quantity)
        reply = await self._hold_command(self._scripts.confirm, hold_id, user_id, now_ms, part)
        tag = text(reply[0])
        if tag == "confirmed":
            return written(reply)
        if tag == "unchanged":
            return Outcome(Hold.from_stored(reply[1]), changed=False)
        if tag in ("quantity_mismatch", "quantity_too_large"):
            raise lifecycle.confirm_refusal(tag, reply, hold_id, quantity)
        if tag == "expired":
            raise errors.HoldExpired(Hold.from_stored(reply[1]))
        if tag == "cancelled":
            raise errors.HoldCancelled(Hold.from_stored(reply[1]))
        raise self._refusal(tag, reply, hold_id=hold_id)

    async def cancel(
        self, hold_id: str, user_id: str | None, *, now_ms: int | None = None
    ) -> Outcome:
        """Cancel a hold or booking; cancelling twice, or an expired hold, is a no-op."""
        reply = await self._hold_command(self._scripts.cancel, hold_id, user_id, now_ms)
        tag = text(reply[0])
        if tag == "cancelled":
            return written(reply)
        if tag == "unchanged":
            return Outcome(Hold.from_stored(reply[1]), changed=False)
        raise self._refusal(tag, reply, hold_id=hold_id)

    async def _hold_command(
        self, script: Any, hold_id: str, user_id: str | None, now_ms: int | None, *extra: str
    ) -> Any:
        if user_id is not None:
            check_user_id(user_id)  # '' would mean "any caller" to the script
        slot_id = slot_of_hold(hold_id)
        if slot_id is None:
            raise errors.HoldNotFound(hold_id)
        partition = self.keys.partition_of(slot_id)
        args = [
            clock_arg(now_ms),
            self._batch,
            self._retention_ms,
            hold_id,
            "" if user_id is None else user_id,
            *extra,
        ]
        async with redis_errors():
            reply = await self._run(script, self.keys.partition(partition), args)
        if text(reply[0]) == "state_unavailable":
            raise errors.StateUnavailable(partition)
        return reply

    async def create_slot(
        self,
        slot_id: int,
        capacity: int,
        *,
        state: str = "open",
        attributes: dict[str, str] | None = None,
        now_ms: int | None = None,
    ) -> Slot:
        return await self._upsert_slot(slot_id, "create", capacity, state, attributes or {}, now_ms)

    async def update_slot(
        self,
        slot_id: int,
        *,
        capacity: int | None = None,
        state: str | None = None,
        attributes: dict[str, str] | None = None,
        now_ms: int | None = None,
    ) -> Slot:
        """Change what is given; ``attributes`` replaces all of label/starts_at/ends_at."""
        return await self._upsert_slot(slot_id, "update", capacity, state, attributes, now_ms)

    async def _upsert_slot(
        self,
        slot_id: int,
        mode: str,
        capacity: int | None,
        state: str | None,
        attributes: dict[str, str] | None,
        now_ms: int | None,
    ) -> Slot:
        check_slot_id(slot_id)
        if capacity is not None and capacity < 0:
            raise ValueError("capacity must be >= 0")
        if state not in (None, "open", "closed"):
            raise ValueError("state must be 'open' or 'closed'")
        partition = self.keys.partition_of(slot_id)
        args = [
            clock_arg(now_ms),
            self._batch,
            self._retention_ms,
            str(slot_id),
            mode,
            "" if capacity is None else str(capacity),
            state or "",
            "" if attributes is None else orjson.dumps(attributes).decode(),
        ]
        async with redis_errors():
            reply = await self._scripts.upsert_slot(
                keys=self.keys.partition(partition), args=args, client=self._redis
            )
        tag = text(reply[0])
        if tag in ("created", "updated"):
            return slot_from_fields(slot_id, reply[1:])
        raise self._refusal(tag, reply, partition=partition, slot_id=slot_id)

    async def sweep(self, partition: int, *, now_ms: int | None = None) -> tuple[int, bool]:
        """Expire due holds of one partition, one batch: (expired, more are due)."""
        args = [clock_arg(now_ms), self._batch, self._retention_ms]
        async with redis_errors():
            reply = await self._scripts.expire(
                keys=self.keys.partition(partition), args=args, client=self._redis
            )
        if text(reply[0]) == "state_unavailable":
            raise errors.StateUnavailable(partition)
        return int(reply[1]), bool(int(reply[2]))

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        if self.settings.min_replicas:  # not coalesced: WAIT must follow on the same connection
            return await run_replicated(self._redis, script, keys, args, self.settings)
        if self._coalescer is not None:
            return await self._coalescer.call(script, keys, args)
        return await script(keys=keys, args=args, client=self._redis)

    # -- reads ----------------------------------------------------------------

    async def get_hold(self, hold_id: str) -> Hold:
        slot_id = slot_of_hold(hold_id)
        if slot_id is None:
            raise errors.HoldNotFound(hold_id)
        partition = self.keys.partition_of(slot_id)
        async with redis_errors(), self._read.pipeline(transaction=False) as pipe:
            pipe.hexists(self.keys.slots(partition), EPOCH_FIELD)
            pipe.hget(self.keys.holds(partition), hold_id)
            has_epoch, raw = await pipe.execute()
        if not has_epoch:
            raise errors.StateUnavailable(partition)
        if raw is None:
            raise errors.HoldNotFound(hold_id)
        return Hold.from_stored(raw, hold_id)

    async def slot(self, slot_id: int) -> Slot:
        partition = self.keys.partition_of(slot_id)
        fields = [f"{slot_id}:{name}" for name in SLOT_FIELDS]
        async with redis_errors(), self._read.pipeline(transaction=False) as pipe:
            pipe.hexists(self.keys.slots(partition), EPOCH_FIELD)
            pipe.hmget(self.keys.slots(partition), fields)
            has_epoch, values = await pipe.execute()
        if not has_epoch:
            raise errors.StateUnavailable(partition)
        if values[0] is None:
            raise errors.SlotNotFound(slot_id)
        return slot_from_fields(slot_id, values)

    async def availability(self) -> list[Slot]:
        """Every slot, ordered by id: one pipelined round trip per partition at most."""
        partitions = range(self.settings.partitions)
        async with redis_errors(), self._read.pipeline(transaction=False) as pipe:
            for p in partitions:
                pipe.hexists(self.keys.slots(p), EPOCH_FIELD)
                pipe.hgetall(self.keys.slots(p))
            replies = await pipe.execute()
        slots: list[Slot] = []
        for p in partitions:
            if not replies[2 * p]:
                raise errors.StateUnavailable(p)
            slots.extend(slots_from_hash(replies[2 * p + 1]))
        slots.sort(key=lambda s: s.slot_id)
        return slots

    async def unavailable_partitions(self) -> list[int]:
        """Partitions without their epoch marker (they refuse every command)."""
        async with redis_errors(), self._redis.pipeline(transaction=False) as pipe:
            for p in range(self.settings.partitions):
                pipe.hexists(self.keys.slots(p), EPOCH_FIELD)
            found = await pipe.execute()
        return [p for p, ok in enumerate(found) if not ok]

    async def scripts_loaded(self) -> bool:
        async with redis_errors():
            return await self._scripts.all_loaded(self._redis)

    async def load_scripts(self) -> None:
        async with redis_errors():
            await self._scripts.load_all(self._redis)

    # -- rebuilding -----------------------------------------------------------

    async def reset_partition(self, partition: int) -> None:
        """Drop a partition's live state (not its stream): commands refuse from now on."""
        async with redis_errors():
            await self._scripts.load_partition(
                keys=self.keys.partition(partition), args=["begin"], client=self._redis
            )

    async def partition_holds(self, partition: int) -> list[Hold]:
        """Every hold Redis keeps for a partition (reconciliation; HSCAN, not blocking)."""
        holds = []
        async with redis_errors():
            async for hold_id, raw in self._redis.hscan_iter(
                self.keys.holds(partition), count=1000
            ):
                holds.append(Hold.from_stored(raw, text(hold_id)))
        return holds

    async def partition_slots(self, partition: int) -> list[Slot]:
        async with redis_errors():
            raw = await self._redis.hgetall(self.keys.slots(partition))
        return sorted(slots_from_hash(raw), key=lambda s: s.slot_id)

    async def load_partition(
        self,
        partition: int,
        slots: Iterable[Slot],
        holds: Iterable[Hold],
        *,
        epoch: str,
        now_ms: int | None = None,
        sequence: int = 0,
        entries: Iterable[WaitEntry] = (),
    ) -> None:
        """Replace a partition's state with a snapshot, then mark it built.

        Counters are recomputed from the holds. The partition refuses commands
        from the first call until the epoch marker is set by the last; callers
        serialise rebuilds of one partition (the sync worker holds a lock).
        Events resume after ``sequence`` (PostgreSQL's highest applied).
        """
        slots = list(slots)
        # The expiry and finished queues are in time order (lua/lib.lua).
        holds = sorted(holds, key=_queue_time)
        known = {s.slot_id for s in slots}
        for hold in holds:
            if hold.slot_id not in known or self.keys.partition_of(hold.slot_id) != partition:
                raise ValueError(f"hold {hold.hold_id} names a slot outside the snapshot")
        keys = self.keys.partition(partition)
        script = self._scripts.load_partition
        async with redis_errors():
            await script(keys=keys, args=["begin"], client=self._redis)
            slot_rows = [
                {
                    "id": str(s.slot_id),
                    "cap": s.capacity,
                    "state": s.state,
                    "meta": orjson.dumps(s.attributes).decode(),
                }
                for s in slots
            ]
            for chunk in chunks(slot_rows, _LOAD_CHUNK):
                await script(keys=keys, args=["slots", orjson.dumps(chunk)], client=self._redis)
            for hold_chunk in chunks(holds, _LOAD_CHUNK):
                idem_keys = [
                    self.keys.idempotency(h.slot_id, h.user_id, h.idempotency_key)
                    for h in hold_chunk
                ]
                payload = orjson.dumps([h.to_stored() for h in hold_chunk])
                await script(
                    keys=[*keys, *idem_keys],
                    args=["holds", payload, clock_arg(now_ms), self._idempotency_ttl_ms],
                    client=self._redis,
                )
            await self.waitlist.load(partition, entries, now_ms=now_ms)
            await script(keys=keys, args=["commit", epoch, str(sequence)], client=self._redis)

    def _refusal(self, tag: str, reply: Sequence[Any], **context: Any) -> errors.EngineError:
        return refusal(tag, reply, held_limit=self.settings.max_held_per_user_slot, **context)


def _queue_time(hold: Hold) -> int:
    if hold.status == "held":
        return hold.expires_at_ms
    return hold.cancelled_at_ms or hold.expired_at_ms or hold.created_at_ms
