"""Reading holds: Redis while it keeps them, then the durable record.

Routes, the CLI and tests share these, so the rule "answer from PostgreSQL once
the hold has left Redis" lives here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import engine
from engine import Engine, Hold, Outcome

from .archived import replay_or_refuse
from .db import Pool
from .records import HOLD_COLUMNS, hold_from_row

__all__ = ["HoldPage", "find_hold", "hold_or_replay", "list_holds", "stored_hold"]


async def stored_hold(pool: Pool, hold_id: str) -> Hold | None:
    """The durable record's copy."""
    row = await pool.fetchrow(f"SELECT {HOLD_COLUMNS} FROM holds WHERE hold_id = $1", hold_id)
    return None if row is None else hold_from_row(row)


async def find_hold(eng: Engine, pool: Pool, hold_id: str) -> Hold | None:
    """The hold by id, archived ones included; None if nobody knows it."""
    try:
        return await eng.get_hold(hold_id)
    except engine.HoldNotFound:
        if engine.slot_of_hold(hold_id) is None:
            return None  # not one of our ids: PostgreSQL is not asked
        return await stored_hold(pool, hold_id)


async def hold_or_replay(
    eng: Engine, pool: Pool, slot_id: int, user_id: str, key: str, quantity: int
) -> Outcome:
    """Make a hold, or replay the one ``key`` made; a hold that has left Redis
    replays from PostgreSQL (raises HoldArchived if that has not got it either,
    SlotArchived for a new hold on an archived slot)."""
    try:
        return await eng.hold(slot_id, user_id, key, quantity)
    except engine.SlotNotFound:
        # An archived slot (sync/archive.py): its holds replay from PostgreSQL,
        # a new one is refused (SlotArchived).
        replayed = await replay_or_refuse(pool, slot_id, user_id, key, quantity)
        if replayed is None:
            raise
        return replayed
    except engine.HoldArchived as exc:
        hold = await stored_hold(pool, exc.hold_id)
        if hold is None:
            raise
        return Outcome(hold, changed=False)


@dataclass(frozen=True, slots=True)
class HoldPage:
    holds: list[Hold]
    # (created_at_ms, hold_id) of the last hold when more follow, else None.
    next_after: tuple[int, str] | None


async def list_holds(
    pool: Pool, user_id: str, limit: int, after: tuple[datetime, str] | None = None
) -> HoldPage:
    """A user's holds, newest first, from the durable record (the sync worker's copy)."""
    args: list[object] = [int(user_id), limit + 1]
    where = "user_id = $1"
    if after is not None:
        where += " AND (created_at, hold_id) < ($3, $4)"
        args += list(after)
    rows = await pool.fetch(
        f"SELECT {HOLD_COLUMNS} FROM holds WHERE {where}"
        " ORDER BY created_at DESC, hold_id DESC LIMIT $2",
        *args,
    )
    holds = [hold_from_row(r) for r in rows[:limit]]
    more = len(rows) > limit
    return HoldPage(holds, (holds[-1].created_at_ms, holds[-1].hold_id) if more else None)
