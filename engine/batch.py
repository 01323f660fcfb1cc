"""Many holds in one call per partition (lua/hold_batch.lua).

Each item is judged by the rules of a single hold (lib.lua ``hold_request``, the
same function hold.lua runs), in the order given; what differs is the cost: the
items of one partition go to Redis as one script call, so the arguments are
packed and the script set up once per partition instead of once per hold. The
Engine builds one ``HoldBatch`` over its own runner and exposes it as
``engine.batch``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import errors
from .keys import KeySchema, check_slot_id, check_user_id, new_hold_id
from .models import Hold, Outcome
from .replies import redis_errors, refusal, text
from .scripts import Scripts, clock_arg, housekeeping_args
from .settings import EngineSettings

__all__ = ["HoldBatch", "HoldItem"]

# Engine._run: (script, keys, args) -> reply.
_Runner = Callable[[Any, list[str], list[Any]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class HoldItem:
    """One hold request of a batch, as Engine.hold takes it."""

    slot_id: int
    user_id: str
    idempotency_key: str
    quantity: int = 1


class HoldBatch:
    def __init__(
        self, run: _Runner, scripts: Scripts, keys: KeySchema, settings: EngineSettings
    ) -> None:
        self._run = run
        self._scripts = scripts
        self._keys = keys
        self._settings = settings
        self._fixed = [
            *housekeeping_args(settings),
            str(settings.hold_ttl_s * 1000),
            str(settings.idempotency_ttl_s * 1000),
            str(settings.max_held_per_user_slot),
        ]

    async def hold_many(
        self, items: Sequence[HoldItem], *, now_ms: int | None = None
    ) -> list[Outcome | errors.EngineError]:
        """Engine.hold for every item: one result per item, in order, each an
        Outcome or the EngineError that single hold would raise. Raises only
        ValueError (a bad item: nothing is sent) and BackendUnavailable."""
        by_partition: dict[int, list[int]] = {}
        for n, item in enumerate(items):
            if not 1 <= item.quantity <= self._settings.max_quantity:
                raise ValueError(f"quantity must be 1..{self._settings.max_quantity}")
            check_slot_id(item.slot_id)
            check_user_id(item.user_id)
            if not item.idempotency_key:
                raise ValueError("idempotency_key must not be empty")
            by_partition.setdefault(self._keys.partition_of(item.slot_id), []).append(n)
        clock = clock_arg(now_ms)
        calls = [
            self._call(partition, [items[n] for n in ns], clock)
            for partition, ns in by_partition.items()
        ]
        # One loop turn: with coalescing on, every partition's call is one pipeline.
        async with redis_errors():
            replies = await asyncio.gather(*calls)
        results: dict[int, Outcome | errors.EngineError] = {}
        for (partition, ns), reply in zip(by_partition.items(), replies, strict=True):
            for n, item_reply in zip(ns, reply, strict=True):
                results[n] = self._result(item_reply, partition, items[n].slot_id)
        return [results[n] for n in range(len(items))]

    def _call(self, partition: int, items: list[HoldItem], clock: str) -> Awaitable[Any]:
        keys = [
            *self._keys.partition(partition),
            *(self._keys.idempotency(i.slot_id, i.user_id, i.idempotency_key) for i in items),
        ]
        args: list[Any] = [clock, *self._fixed]
        for i in items:
            args += [
                str(i.slot_id),
                i.user_id,
                str(i.quantity),
                new_hold_id(i.slot_id),
                i.idempotency_key,
            ]
        return self._run(self._scripts.hold_batch, keys, args)

    def _result(
        self, reply: Sequence[Any], partition: int, slot_id: int
    ) -> Outcome | errors.EngineError:
        tag = text(reply[0])
        if tag == "created":
            return Outcome(Hold.from_stored(reply[1]), changed=True)
        if tag == "replayed":
            return Outcome(Hold.from_stored(reply[1]), changed=False)
        return refusal(
            tag,
            reply,
            partition=partition,
            slot_id=slot_id,
            held_limit=self._settings.max_held_per_user_slot,
        )
