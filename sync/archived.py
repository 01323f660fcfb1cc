"""What PostgreSQL says about archived slots (sync/archive.py takes them out of Redis).

Once a slot is archived, PostgreSQL answers for it and its holds: the slot's
last state, a replay of the request that made one of its holds, and the 409
(``SlotArchived``) for anything that would change them. The drain records an
archive event here too (``apply_archive_events``), so a sweep that died after
its script still leaves the slot marked.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

import engine
from engine import Outcome, Slot

from .db import Conn, Pool
from .records import HOLD_COLUMNS, SLOT_COLUMNS, at, hold_from_row, slot_from_row

__all__ = [
    "apply_archive_events",
    "archived_group_refusal",
    "archived_hold_refusal",
    "archived_slot",
    "mark_archived",
    "replay_or_refuse",
]

_MARK = "UPDATE slots SET archived_at = $2 WHERE slot_id = $1 AND archived_at IS NULL"


async def mark_archived(conn: Conn | Pool, slot_ids: Iterable[int], at_ms: int) -> None:
    """Record slots as archived (the first time counts)."""
    when = at(at_ms)
    await conn.executemany(_MARK, [(slot_id, when) for slot_id in slot_ids])


async def apply_archive_events(conn: Conn, payloads: Iterable[bytes]) -> None:
    """The drain's part: each archive event (lua/archive.lua: {id, t, n}) marks its slot."""
    rows = []
    for payload in payloads:
        d = orjson.loads(payload)
        rows.append((int(d["id"]), at(int(d["t"]))))
    await conn.executemany(_MARK, rows)


async def archived_slot(pool: Pool, slot_id: int) -> Slot | None:
    """An archived slot as it was when it left Redis (nothing held: the archive waits
    for that), or None if the slot is not archived."""
    row = await pool.fetchrow(
        f"SELECT {SLOT_COLUMNS}, confirmed FROM slots"
        " WHERE slot_id = $1 AND archived_at IS NOT NULL",
        slot_id,
    )
    if row is None:
        return None
    slot = slot_from_row(row)
    confirmed = int(row["confirmed"])
    return Slot(
        slot_id=slot.slot_id,
        capacity=slot.capacity,
        remaining=slot.capacity - confirmed,
        held=0,
        confirmed=confirmed,
        state=slot.state,
        label=slot.label,
        starts_at=slot.starts_at,
        ends_at=slot.ends_at,
    )


async def _is_archived(pool: Pool, slot_id: int) -> bool:
    return bool(
        await pool.fetchval("SELECT archived_at IS NOT NULL FROM slots WHERE slot_id = $1", slot_id)
    )


async def replay_or_refuse(
    pool: Pool, slot_id: int, user_id: str, key: str, quantity: int
) -> Outcome | None:
    """A hold request on a slot Redis does not know: None if the slot is not archived
    (it does not exist); else the replay of the hold ``key`` made, from PostgreSQL
    (IdempotencyMismatch for another quantity), or SlotArchived for a new one."""
    if not await _is_archived(pool, slot_id):
        return None
    row = await pool.fetchrow(
        f"SELECT {HOLD_COLUMNS} FROM holds"
        " WHERE user_id = $1 AND slot_id = $2 AND idempotency_key = $3",
        int(user_id),
        slot_id,
        key,
    )
    if row is None:
        raise engine.SlotArchived(slot_id)
    hold = hold_from_row(row)
    # The request's quantity, as Redis's idempotency record kept it: a partial
    # confirm lowered the hold's since; its first event says what was asked.
    first = await pool.fetchval(
        "SELECT quantity FROM hold_events WHERE hold_id = $1 AND version = 1", hold.hold_id
    )
    first = hold.quantity if first is None else int(first)
    if quantity != first:
        raise engine.IdempotencyMismatch(slot_id, first)
    return Outcome(hold, changed=False)


async def archived_hold_refusal(
    pool: Pool, hold_id: str, user_id: str | None
) -> engine.SlotArchived | None:
    """SlotArchived if ``hold_id`` is a hold of an archived slot that ``user_id`` may
    see (None: an operator); None otherwise (the hold is as unknown as before)."""
    slot_id = engine.slot_of_hold(hold_id)
    if slot_id is None:
        return None
    row = await pool.fetchrow(
        "SELECT h.user_id FROM holds h JOIN slots s USING (slot_id)"
        " WHERE h.hold_id = $1 AND s.archived_at IS NOT NULL",
        hold_id,
    )
    if row is None or (user_id is not None and str(row["user_id"]) != user_id):
        return None
    return engine.SlotArchived(slot_id, hold_id)


async def archived_group_refusal(
    pool: Pool, group_id: str, user_id: str | None
) -> engine.SlotArchived | None:
    """SlotArchived if a member of ``user_id``'s (None: anyone's) group is on an
    archived slot (the archive takes a group's slots only once all are over)."""
    slot_id = await pool.fetchval(
        "SELECT h.slot_id FROM holds h JOIN slots s USING (slot_id)"
        " WHERE h.group_id = $1 AND s.archived_at IS NOT NULL"
        " AND ($2::bigint IS NULL OR h.user_id = $2) LIMIT 1",
        group_id,
        None if user_id is None else int(user_id),
    )
    return None if slot_id is None else engine.SlotArchived(int(slot_id))
