"""The audit after Redis lost data: repeated dedupe keys whose content differs,
and live holds only PostgreSQL knows.

A hold event's dedupe keys are (stream, entry_id) and (hold_id, version). A
repeat is normally a copy (a batch claimed and applied twice, the drain's copy of
a confirm the API wrote through) and is skipped. After Redis went back in time
the same key can carry another content: the same version of a hold with another
status, an entry id reused by a recreated stream. Such an event is parked in
sync_rejects with both versions named, and logged; never silently dropped. The
hold row keeps what PostgreSQL had (the version guard), so what was confirmed
stays confirmed.
"""

from __future__ import annotations

import logging
from typing import Any

from engine import Engine

__all__ = ["park_conflicts", "postgres_only_live_holds"]

log = logging.getLogger("slotkeeper.sync")

# Positions in the hold_events row tuple built by sync/events.py::_hold_rows.
_STREAM, _ENTRY, _HOLD, _QUANTITY, _STATUS, _VERSION = 0, 1, 2, 5, 6, 7

_PARK = """
INSERT INTO sync_rejects (stream, entry_id, payload, error) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
"""


async def park_conflicts(conn: Any, events: list[tuple[Any, ...]], payloads: list[bytes]) -> int:
    """Park the events whose dedupe key is already on record with another content;
    returns how many. ``events`` are hold_events rows about to be inserted."""
    if not events:
        return 0
    if len(events) == 1:  # a confirm's write-through: two index lookups
        (event,) = events
        rows = await conn.fetch(
            "SELECT stream, entry_id, hold_id, quantity, status, version FROM hold_events"
            " WHERE (hold_id = $1 AND version = $2) OR (stream = $3 AND entry_id = $4)",
            event[_HOLD],
            event[_VERSION],
            event[_STREAM],
            event[_ENTRY],
        )
    else:
        rows = await _lookup(conn, events)
    if not rows:
        return 0
    return await _park(conn, rows, events, payloads)


async def _lookup(conn: Any, events: list[tuple[Any, ...]]) -> list[Any]:
    # Joined on the two unique constraints' indexes, not one OR over the table.
    rows: list[Any] = await conn.fetch(
        "SELECT e.stream, e.entry_id, e.hold_id, e.quantity, e.status, e.version"
        " FROM unnest($1::text[], $2::int[]) AS k (hold_id, version)"
        " JOIN hold_events e ON e.hold_id = k.hold_id AND e.version = k.version"
        " UNION SELECT e.stream, e.entry_id, e.hold_id, e.quantity, e.status, e.version"
        " FROM unnest($3::text[], $4::text[]) AS k (stream, entry_id)"
        " JOIN hold_events e ON e.stream = k.stream AND e.entry_id = k.entry_id",
        [e[_HOLD] for e in events],
        [e[_VERSION] for e in events],
        [e[_STREAM] for e in events],
        [e[_ENTRY] for e in events],
    )
    return rows


async def _park(
    conn: Any, rows: list[Any], events: list[tuple[Any, ...]], payloads: list[bytes]
) -> int:
    by_version = {(r["hold_id"], r["version"]): r for r in rows}
    by_entry = {(r["stream"], r["entry_id"]): r for r in rows}
    parked = 0
    for event, payload in zip(events, payloads, strict=True):
        for known in (
            by_version.get((event[_HOLD], event[_VERSION])),
            by_entry.get((event[_STREAM], event[_ENTRY])),
        ):
            if known is None or _same(known, event):
                continue
            error = (
                f"audit conflict: {event[_STREAM]} {event[_ENTRY]} says hold {event[_HOLD]}"
                f" v{event[_VERSION]} {event[_STATUS]} x{event[_QUANTITY]}; on record"
                f" {known['stream']} {known['entry_id']}: hold {known['hold_id']}"
                f" v{known['version']} {known['status']} x{known['quantity']}"
            )
            log.error("%s", error)
            await conn.execute(
                _PARK, event[_STREAM], event[_ENTRY], payload.decode(errors="replace"), error
            )
            parked += 1
            break
    return parked


def _same(known: Any, event: tuple[Any, ...]) -> bool:
    return (known["hold_id"], known["version"], known["status"], known["quantity"]) == (
        event[_HOLD],
        event[_VERSION],
        event[_STATUS],
        event[_QUANTITY],
    )


async def postgres_only_live_holds(engine: Engine, pool: Any, partition: int) -> list[str]:
    """Held or confirmed holds PostgreSQL has for a partition and Redis does not
    (`restore --from redis` reports them and leaves them as they are)."""
    in_redis = [h.hold_id for h in await engine.partition_holds(partition)]
    rows = await pool.fetch(
        "SELECT hold_id FROM holds WHERE slot_id % $1 = $2 AND status IN ('held', 'confirmed')"
        " AND NOT hold_id = ANY($3::text[]) ORDER BY hold_id",
        engine.settings.partitions,
        partition,
        in_redis,
    )
    return [r["hold_id"] for r in rows]
