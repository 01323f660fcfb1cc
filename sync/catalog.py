"""The slot catalog: create and change slots, PostgreSQL and Redis together.

The catalog row and the live counters change in one step: the row is written in
a transaction that commits only if the engine accepted the change too.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import engine
from engine import Engine, Slot

from .db import Conn, Pool
from .records import SLOT_COLUMNS, slot_row, upsert_slots

__all__ = ["SlotWindowInvalid", "create_slot", "update_slot"]


class SlotWindowInvalid(ValueError):
    def __init__(self) -> None:
        super().__init__("ends_at must not be before starts_at")


def _slot(slot_id: int, fields: Mapping[str, Any]) -> Slot:
    """The catalog's part of a slot; ``fields`` hold datetimes, as columns do."""
    starts: datetime | None = fields.get("starts_at")
    ends: datetime | None = fields.get("ends_at")
    if starts is not None and ends is not None and ends < starts:
        raise SlotWindowInvalid()
    return Slot(
        slot_id=slot_id,
        capacity=fields["capacity"],
        remaining=fields["capacity"],
        held=0,
        confirmed=0,
        state=fields.get("state") or "open",
        label=fields.get("label"),
        starts_at=None if starts is None else starts.isoformat(),
        ends_at=None if ends is None else ends.isoformat(),
    )


async def _next_free_id(conn: Conn) -> int:
    # Ids given explicitly may have taken some of the sequence's values.
    while True:
        candidate = int(await conn.fetchval("SELECT nextval('slots_auto_id')"))
        if not await conn.fetchval("SELECT 1 FROM slots WHERE slot_id = $1", candidate):
            return candidate


async def create_slot(eng: Engine, pool: Pool, fields: Mapping[str, Any]) -> Slot:
    """Create a slot (``slot_id`` optional: the next free id); SlotExists if taken."""
    _slot(0, fields)  # refuse a bad window before an id is spent
    async with pool.acquire() as conn, conn.transaction():
        slot_id = fields.get("slot_id") or await _next_free_id(conn)
        slot = _slot(slot_id, fields)
        inserted = await conn.fetchval(
            f"INSERT INTO slots ({SLOT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT DO NOTHING RETURNING slot_id",
            *slot_row(slot),
        )
        if inserted is None:
            raise engine.SlotExists(slot_id)
        return await eng.create_slot(
            slot_id, slot.capacity, state=slot.state, attributes=slot.attributes
        )


async def update_slot(eng: Engine, pool: Pool, slot_id: int, fields: Mapping[str, Any]) -> Slot:
    """Change what ``fields`` name (capacity, state, label, starts_at, ends_at)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {SLOT_COLUMNS}, archived_at FROM slots WHERE slot_id = $1 FOR UPDATE",
            slot_id,
        )
        if row is None:
            raise engine.SlotNotFound(slot_id)
        if row["archived_at"] is not None:
            raise engine.SlotArchived(slot_id)  # over: it left Redis (sync/archive.py)
        current = {k: v for k, v in row.items() if k != "archived_at"}
        slot = _slot(slot_id, {**current, **fields})
        await upsert_slots(conn, [slot])
        return await eng.update_slot(
            slot_id,
            capacity=fields.get("capacity"),
            state=fields.get("state"),
            attributes=slot.attributes,
        )
