"""Script replies into typed results and engine errors; Redis failures into one error."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
from redis.exceptions import (
    ClusterDownError,
    ReadOnlyError,
    TryAgainError,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from . import errors
from .models import Hold, Outcome, Slot

__all__ = [
    "SLOT_FIELDS",
    "chunks",
    "redis_errors",
    "refusal",
    "slot_from_fields",
    "slots_from_hash",
    "text",
    "written",
]

SLOT_FIELDS = ("cap", "rem", "held", "conf", "state", "meta")

_UNREACHABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    TryAgainError,
    ReadOnlyError,
)


@asynccontextmanager
async def redis_errors() -> AsyncIterator[None]:
    try:
        yield
    except _UNREACHABLE as exc:
        raise errors.BackendUnavailable(str(exc) or type(exc).__name__) from exc


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def refusal(
    tag: str,
    reply: Sequence[Any],
    *,
    partition: int = -1,
    slot_id: int = -1,
    hold_id: str = "",
    held_limit: int = 0,
) -> errors.EngineError:
    """The engine error for a script's refusal tag (see each script's header)."""
    match tag:
        case "state_unavailable":
            return errors.StateUnavailable(partition)
        case "not_found" if hold_id:
            return errors.HoldNotFound(hold_id)
        case "not_found":
            return errors.SlotNotFound(slot_id)
        case "exists":
            return errors.SlotExists(slot_id)
        case "closed":
            return errors.SlotClosed(slot_id)
        case "capacity":
            return errors.CapacityExhausted(slot_id, int(reply[1]))
        case "capacity_below":
            return errors.CapacityBelowCommitted(slot_id, int(reply[1]))
        case "user_limit":
            return errors.UserHoldLimit(slot_id, int(reply[1]), held_limit)
        case "idempotency_mismatch":
            return errors.IdempotencyMismatch(slot_id, int(reply[1]))
        case "group_member":
            hold = orjson.loads(reply[1])
            return errors.HoldInGroup(Hold.from_stored(reply[1]), str(hold["g"]))
        case "replay_archived":
            return errors.HoldArchived(text(reply[1]))
    raise RuntimeError(f"unexpected script reply {tag!r}")


def slot_from_fields(slot_id: int, values: Sequence[Any]) -> Slot:
    """Build a Slot from [cap, rem, held, conf, state, meta] as stored."""
    cap, rem, held, conf, state, meta = values
    attrs = orjson.loads(meta) if meta else {}
    return Slot(
        slot_id=slot_id,
        capacity=int(cap),
        remaining=int(rem),
        held=int(held),
        confirmed=int(conf),
        state=text(state),  # type: ignore[arg-type]
        label=attrs.get("label"),
        starts_at=attrs.get("starts_at"),
        ends_at=attrs.get("ends_at"),
    )


def slots_from_hash(raw: dict[Any, Any]) -> list[Slot]:
    fields: dict[int, dict[str, Any]] = {}
    for key, value in raw.items():
        slot, sep, name = text(key).partition(":")
        if not sep:  # 'seq', the partition's event sequence (lua/lib.lua)
            continue
        fields.setdefault(int(slot), {})[name] = value
    return [
        slot_from_fields(slot_id, [f[name] for name in SLOT_FIELDS])
        for slot_id, f in fields.items()
    ]


def written(reply: Sequence[Any]) -> Outcome:
    """A confirm or cancel that changed the hold: {tag, event JSON, entry id}."""
    event = reply[1] if isinstance(reply[1], bytes) else str(reply[1]).encode()
    return Outcome(Hold.from_stored(event), changed=True, event=event, entry_id=text(reply[2]))


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
