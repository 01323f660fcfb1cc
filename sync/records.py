"""PostgreSQL rows <-> engine records: the one place that writes holds and slots.

Drain, restore, reconcile, the catalog and the seeder all write through
``upsert_holds`` and ``upsert_slots``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from engine import Hold, Slot

from .db import Conn, Pool

__all__ = [
    "HOLD_COLUMNS",
    "NEWER_HOLDS_CONFLICT",
    "SLOT_COLUMNS",
    "at",
    "hold_from_row",
    "ms",
    "slot_from_row",
    "slot_row",
    "upsert_holds",
    "upsert_slots",
]

HOLD_COLUMNS = (
    "hold_id, slot_id, user_id, quantity, status, idempotency_key, created_at, expires_at,"
    " confirmed_at, cancelled_at, expired_at, version, extensions, group_id"
)
SLOT_COLUMNS = "slot_id, capacity, state, label, starts_at, ends_at"


def ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def at(value_ms: int | None) -> datetime | None:
    return None if value_ms is None else datetime.fromtimestamp(value_ms / 1000, UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def hold_from_row(row: asyncpg.Record) -> Hold:
    return Hold(
        hold_id=row["hold_id"],
        slot_id=row["slot_id"],
        user_id=str(row["user_id"]),
        quantity=row["quantity"],
        status=row["status"],
        created_at_ms=int(row["created_at"].timestamp() * 1000),
        expires_at_ms=int(row["expires_at"].timestamp() * 1000),
        version=row["version"],
        idempotency_key=row["idempotency_key"] or "",
        confirmed_at_ms=ms(row["confirmed_at"]),
        cancelled_at_ms=ms(row["cancelled_at"]),
        expired_at_ms=ms(row["expired_at"]),
        extensions=row["extensions"],
        group_id=row["group_id"] or "",
    )


def slot_from_row(row: asyncpg.Record) -> Slot:
    """A catalog row as a slot with nothing held (the counters live in Redis)."""
    return Slot(
        slot_id=row["slot_id"],
        capacity=row["capacity"],
        remaining=row["capacity"],
        held=0,
        confirmed=0,
        state=row["state"],
        label=row["label"],
        starts_at=_iso(row["starts_at"]),
        ends_at=_iso(row["ends_at"]),
    )


def _hold_row(hold: Hold) -> tuple[Any, ...]:
    return (
        hold.hold_id,
        hold.slot_id,
        int(hold.user_id),
        hold.quantity,
        hold.status,
        hold.idempotency_key or None,  # only the creating event carries it
        at(hold.created_at_ms),
        at(hold.expires_at_ms),
        at(hold.confirmed_at_ms),
        at(hold.cancelled_at_ms),
        at(hold.expired_at_ms),
        hold.version,
        hold.extensions,
        hold.group_id or None,
    )


def slot_row(slot: Slot) -> tuple[Any, ...]:
    return (
        slot.slot_id,
        slot.capacity,
        slot.state,
        slot.label,
        datetime.fromisoformat(slot.starts_at) if slot.starts_at else None,
        datetime.fromisoformat(slot.ends_at) if slot.ends_at else None,
    )


_UPSERT_HOLDS = f"""
INSERT INTO holds ({HOLD_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (hold_id) DO UPDATE SET
    status = excluded.status, quantity = excluded.quantity, expires_at = excluded.expires_at,
    extensions = excluded.extensions, confirmed_at = excluded.confirmed_at,
    cancelled_at = excluded.cancelled_at, expired_at = excluded.expired_at,
    version = excluded.version,
    idempotency_key = coalesce(holds.idempotency_key, excluded.idempotency_key),
    group_id = coalesce(holds.group_id, excluded.group_id)
"""
# Events of one hold may arrive out of order across batches claimed by different
# workers: then an older version never overwrites a newer one; quantity (a partial
# confirm), expires_at and extensions (an extension) change with the version. The
# one exception is the idempotency key, which only the creating event carries: a
# row first written from a later event (a confirm written through by the API
# before the drain saw the hold made) gets its key when the creating event arrives.
# A hold's group (g) never changes; a row without one takes it from any event.
_NEWER = "holds.version < excluded.version"
# What an upsert that lets a stored newer version win does on conflict (also the
# drain's batch statement, sync/hold_batch.py, which inserts from a SELECT).
NEWER_HOLDS_CONFLICT = f"""
ON CONFLICT (hold_id) DO UPDATE SET
    quantity = CASE WHEN {_NEWER} THEN excluded.quantity ELSE holds.quantity END,
    status = CASE WHEN {_NEWER} THEN excluded.status ELSE holds.status END,
    expires_at = CASE WHEN {_NEWER} THEN excluded.expires_at ELSE holds.expires_at END,
    extensions = CASE WHEN {_NEWER} THEN excluded.extensions ELSE holds.extensions END,
    confirmed_at = CASE WHEN {_NEWER} THEN excluded.confirmed_at ELSE holds.confirmed_at END,
    cancelled_at = CASE WHEN {_NEWER} THEN excluded.cancelled_at ELSE holds.cancelled_at END,
    expired_at = CASE WHEN {_NEWER} THEN excluded.expired_at ELSE holds.expired_at END,
    version = GREATEST(holds.version, excluded.version),
    idempotency_key = coalesce(holds.idempotency_key, excluded.idempotency_key),
    group_id = coalesce(holds.group_id, excluded.group_id)
WHERE {_NEWER}
    OR (holds.idempotency_key IS NULL AND excluded.idempotency_key IS NOT NULL)
    OR (holds.group_id IS NULL AND excluded.group_id IS NOT NULL)
"""
_UPSERT_NEWER_HOLDS = f"""
INSERT INTO holds ({HOLD_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
{NEWER_HOLDS_CONFLICT}"""

_UPSERT_SLOTS = f"""
INSERT INTO slots ({SLOT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (slot_id) DO UPDATE SET
    capacity = excluded.capacity, state = excluded.state, label = excluded.label,
    starts_at = excluded.starts_at, ends_at = excluded.ends_at, updated_at = now()
"""


async def upsert_holds(
    conn: Conn | Pool,
    holds: Iterable[Hold],
    *,
    newer_only: bool,
) -> None:
    """Write holds as they are; with ``newer_only`` a stored newer version wins."""
    sql = _UPSERT_NEWER_HOLDS if newer_only else _UPSERT_HOLDS
    await conn.executemany(sql, [_hold_row(h) for h in holds])


async def upsert_slots(conn: Conn | Pool, slots: Iterable[Slot]) -> None:
    """Write the catalog's part of each slot (capacity, state, attributes)."""
    await conn.executemany(_UPSERT_SLOTS, [slot_row(s) for s in slots])
