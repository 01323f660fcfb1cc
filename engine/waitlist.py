"""The waitlist: join, leave, read an entry, count who waits (lua/wait_*.lua).

Offers are made by the scripts themselves (lua/lib.lua capacity_freed), in the
call that frees capacity; this module only adds and removes entries and reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from . import errors
from .keys import EPOCH_FIELD, KeySchema, check_user_id, new_hold_id, slot_of_hold
from .models import Hold
from .replies import redis_errors, refusal, text
from .scripts import Scripts, clock_arg, housekeeping_args
from .settings import EngineSettings
from .waitlist_models import WaitEntry, Waiting

__all__ = ["Waitlist"]

_SEQ_DIGITS = 15


class Waitlist:
    """Built by Engine (``engine.waitlist``) from its client, keys and scripts."""

    def __init__(
        self, redis: Any, read: Any, scripts: Scripts, keys: KeySchema, settings: EngineSettings
    ) -> None:
        self._redis = redis
        self._read = read
        self._scripts = scripts
        self._keys = keys
        self._settings = settings
        self._housekeeping = housekeeping_args(settings)

    async def join(
        self,
        slot_id: int,
        user_id: str,
        idempotency_key: str,
        quantity: int = 1,
        *,
        now_ms: int | None = None,
    ) -> tuple[WaitEntry, bool]:
        """Join a slot's line; (entry as it is now, created). A repeated key replays."""
        s = self._settings
        if not 1 <= quantity <= s.max_quantity:
            raise ValueError(f"quantity must be 1..{s.max_quantity}")
        if not idempotency_key:
            raise ValueError("idempotency_key must not be empty")
        check_user_id(user_id)
        partition = self._keys.partition_of(slot_id)
        keys = [
            *self._keys.partition(partition),
            self._keys.wait_idempotency(slot_id, user_id, idempotency_key),
        ]
        args = [
            clock_arg(now_ms),
            *self._housekeeping,
            str(slot_id),
            user_id,
            str(quantity),
            new_hold_id(slot_id),
            str(s.waitlist_ttl_s * 1000),
            str(s.waitlist_offer_ttl_s * 1000),
            str(s.idempotency_ttl_s * 1000),
            str(s.max_waiting_per_user_slot),
            idempotency_key,
        ]
        async with redis_errors():
            reply = await self._scripts.wait_join(keys=keys, args=args, client=self._redis)
        tag = text(reply[0])
        if tag in ("created", "replayed"):
            return _answer(reply), tag == "created"
        if tag == "waiting_limit":
            raise errors.WaitingLimit(slot_id, int(reply[1]), s.max_waiting_per_user_slot)
        if tag == "replay_archived":
            raise errors.EntryArchived(text(reply[1]))
        raise refusal(tag, reply, partition=partition, slot_id=slot_id)

    async def leave(
        self, entry_id: str, user_id: str | None, *, now_ms: int | None = None
    ) -> tuple[WaitEntry, bool]:
        """Leave the line; (entry, changed). Leaving twice, or after an offer, changes nothing."""
        slot_id = slot_of_hold(entry_id)
        if slot_id is None:
            raise errors.EntryNotFound(entry_id)
        partition = self._keys.partition_of(slot_id)
        args = [clock_arg(now_ms), *self._housekeeping, entry_id, user_id or ""]
        async with redis_errors():
            reply = await self._scripts.wait_leave(
                keys=self._keys.partition(partition), args=args, client=self._redis
            )
        tag = text(reply[0])
        if tag == "state_unavailable":
            raise errors.StateUnavailable(partition)
        if tag == "not_found":
            raise errors.EntryNotFound(entry_id)
        return WaitEntry.from_stored(reply[1]), tag == "left"

    async def get(self, entry_id: str) -> WaitEntry:
        """An entry with its place in line (waiting) or its hold (offered)."""
        slot_id = slot_of_hold(entry_id)
        if slot_id is None:
            raise errors.EntryNotFound(entry_id)
        partition = self._keys.partition_of(slot_id)
        async with redis_errors(), self._read.pipeline(transaction=False) as pipe:
            pipe.hexists(self._keys.slots(partition), EPOCH_FIELD)
            pipe.hget(self._keys.waitlist(partition), entry_id)
            pipe.hget(self._keys.holds(partition), entry_id)
            has_epoch, raw, raw_hold = await pipe.execute()
        if not has_epoch:
            raise errors.StateUnavailable(partition)
        if raw is None:
            raise errors.EntryNotFound(entry_id)
        entry = WaitEntry.from_stored(raw, entry_id)
        if entry.status == "offered" and raw_hold is not None:
            return entry.with_reads(0, Hold.from_stored(raw_hold, entry_id))
        if entry.status != "waiting":
            return entry
        member = f"{slot_id}:{entry.seq:0{_SEQ_DIGITS}d}:{entry_id}"
        async with redis_errors():
            ahead = await self._read.zlexcount(
                self._keys.wait_order(partition), f"[{slot_id}:", f"({member}"
            )
        return entry.with_reads(int(ahead) + 1, None)

    async def waiting(self, slot_ids: Iterable[int]) -> dict[int, Waiting]:
        """Entries and units waiting, per slot (slots nobody waits for are left out)."""
        ids = list(slot_ids)
        async with redis_errors(), self._read.pipeline(transaction=False) as pipe:
            for slot_id in ids:
                pipe.hmget(
                    self._keys.waiting(self._keys.partition_of(slot_id)),
                    [f"n:{slot_id}", str(slot_id)],
                )
            replies = await pipe.execute()
        return {
            slot_id: Waiting(int(n), int(units))
            for slot_id, (n, units) in zip(ids, replies, strict=True)
            if n is not None and int(n) > 0
        }

    async def partition_entries(self, partition: int) -> list[WaitEntry]:
        """Every entry Redis keeps for a partition (reconciliation; HSCAN)."""
        entries = []
        async with redis_errors():
            async for entry_id, raw in self._redis.hscan_iter(
                self._keys.waitlist(partition), count=1000
            ):
                entries.append(WaitEntry.from_stored(raw, text(entry_id)))
        return entries

    async def load(
        self, partition: int, entries: Iterable[WaitEntry], *, now_ms: int | None = None
    ) -> None:
        """The 'waitlist' phase of a rebuild (Engine.load_partition, between holds and commit)."""
        ordered = sorted(entries, key=lambda e: e.seq)
        keys = self._keys.partition(partition)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            idem = [
                self._keys.wait_idempotency(e.slot_id, e.user_id, e.idempotency_key or "-")
                for e in chunk
            ]
            async with redis_errors():
                await self._scripts.load_partition(
                    keys=[*keys, *idem],
                    args=[
                        "waitlist",
                        orjson.dumps([e.to_stored() for e in chunk]),
                        clock_arg(now_ms),
                        str(self._settings.idempotency_ttl_s * 1000),
                        str(self._settings.waitlist_offer_ttl_s * 1000),
                    ],
                    client=self._redis,
                )


def _answer(reply: Any) -> WaitEntry:
    entry = WaitEntry.from_stored(reply[1])
    raw_hold = reply[3]
    hold = Hold.from_stored(raw_hold, entry.entry_id) if raw_hold else None
    return entry.with_reads(int(reply[2]), hold)
