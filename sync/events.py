"""Stream entries -> rows of the durable record, written in one transaction per batch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from .audit import park_conflicts
from .records import unknown_key
from .sequence import note_sequences, sequence_marks

__all__ = ["Entry", "apply_entries", "upsert_hold", "write_batch"]

log = logging.getLogger("slotkeeper.sync")


@dataclass(frozen=True, slots=True)
class Entry:
    stream: str
    entry_id: str
    kind: str  # 'h' hold event, 's' slot event
    payload: bytes


def _at(ms: Any) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(int(ms) / 1000, UTC)


def _hold_rows(entry: Entry) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    d = orjson.loads(entry.payload)
    hold = (
        d["i"],
        int(d["s"]),
        int(d["u"]),
        int(d["q"]),
        d["st"],
        # Only the creating event carries the key; on the others it is not used
        # (the row exists), but the proposed row must pass the CHECK all the same.
        d.get("k") or unknown_key(d["i"]),
        _at(d["c"]),
        _at(d["e"]),
        _at(d.get("cf")),
        _at(d.get("ca")),
        _at(d.get("xa")),
        int(d["v"]),
    )
    occurred = d.get({"held": "c", "confirmed": "cf", "cancelled": "ca", "expired": "xa"}[d["st"]])
    event = (
        entry.stream,
        entry.entry_id,
        d["i"],
        int(d["s"]),
        int(d["u"]),
        int(d["q"]),
        d["st"],
        int(d["v"]),
        _at(occurred),
    )
    return hold, event


def _slot_rows(entry: Entry) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    d = orjson.loads(entry.payload)
    attrs = orjson.loads(d["meta"]) if d.get("meta") else {}
    starts = attrs.get("starts_at")
    ends = attrs.get("ends_at")
    slot = (
        int(d["id"]),
        int(d["cap"]),
        d["state"],
        attrs.get("label"),
        datetime.fromisoformat(starts) if starts else None,
        datetime.fromisoformat(ends) if ends else None,
    )
    event = (
        entry.stream,
        entry.entry_id,
        int(d["id"]),
        int(d["cap"]),
        d["state"],
        orjson.dumps(attrs).decode(),
        _at(d["t"]),
    )
    return slot, event


# An older version never overwrites a newer one: events of one hold may arrive
# out of order across batches claimed by different workers. The one exception is
# the idempotency key, which only the creating event carries: a row first written
# from a later event (a confirm written through by the API before the drain saw
# the hold made) has a stand-in key, replaced when the creating event arrives.
_NEWER = "holds.version < excluded.version"
_UPSERT_HOLD = f"""
INSERT INTO holds (hold_id, slot_id, user_id, quantity, status, idempotency_key, created_at,
                   expires_at, confirmed_at, cancelled_at, expired_at, version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (hold_id) DO UPDATE SET
    status = CASE WHEN {_NEWER} THEN excluded.status ELSE holds.status END,
    confirmed_at = CASE WHEN {_NEWER} THEN excluded.confirmed_at ELSE holds.confirmed_at END,
    cancelled_at = CASE WHEN {_NEWER} THEN excluded.cancelled_at ELSE holds.cancelled_at END,
    expired_at = CASE WHEN {_NEWER} THEN excluded.expired_at ELSE holds.expired_at END,
    version = GREATEST(holds.version, excluded.version),
    idempotency_key = CASE WHEN holds.idempotency_key = 'unknown:' || holds.hold_id
        THEN excluded.idempotency_key ELSE holds.idempotency_key END
WHERE {_NEWER} OR (holds.idempotency_key = 'unknown:' || holds.hold_id
    AND excluded.idempotency_key <> holds.idempotency_key)
"""
_INSERT_HOLD_EVENT = """
INSERT INTO hold_events (stream, entry_id, hold_id, slot_id, user_id, quantity, status,
                         version, occurred_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT DO NOTHING
"""
_UPSERT_SLOT = """
INSERT INTO slots (slot_id, capacity, state, label, starts_at, ends_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (slot_id) DO UPDATE SET
    capacity = excluded.capacity, state = excluded.state, label = excluded.label,
    starts_at = excluded.starts_at, ends_at = excluded.ends_at, updated_at = now()
"""
_INSERT_SLOT_EVENT = """
INSERT INTO slot_events (stream, entry_id, slot_id, capacity, state, attributes, occurred_at)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)
ON CONFLICT DO NOTHING
"""
_INSERT_REJECT = """
INSERT INTO sync_rejects (stream, entry_id, payload, error) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
"""


async def _apply(conn: Any, entries: list[Entry]) -> None:
    """Apply in stream order; consecutive entries of one kind go in one executemany."""
    run: list[Entry] = []
    for entry in [*entries, None]:
        if run and (entry is None or entry.kind != run[0].kind):
            if run[0].kind == "h":
                rows = [_hold_rows(e) for e in run]
                await park_conflicts(conn, [r[1] for r in rows], [e.payload for e in run])
                await conn.executemany(_UPSERT_HOLD, [r[0] for r in rows])
                await conn.executemany(_INSERT_HOLD_EVENT, [r[1] for r in rows])
            else:
                rows = [_slot_rows(e) for e in run]
                await conn.executemany(_UPSERT_SLOT, [r[0] for r in rows])
                await conn.executemany(_INSERT_SLOT_EVENT, [r[1] for r in rows])
            run = []
        if entry is not None:
            run.append(entry)


async def apply_entries(conn: Any, entries: list[Entry]) -> None:
    """Apply entries in the caller's transaction (the confirm's write-through)."""
    await _apply(conn, entries)


async def upsert_hold(conn: Any, payload: bytes) -> None:
    """Upsert one hold from its JSON (an event or the stored form with i and s),
    version-guarded like the drain, without an audit row (no entry id at hand)."""
    hold, _ = _hold_rows(Entry("", "", "h", payload))
    await conn.execute(_UPSERT_HOLD, *hold)


async def _note_sequences(conn: Any, entries: list[Entry], rewound: set[str] | None) -> None:
    """Record each stream's highest event sequence (sync/sequence.py)."""
    for stream in dict.fromkeys(e.stream for e in entries):
        marks = sequence_marks((e.entry_id, e.payload) for e in entries if e.stream == stream)
        if await note_sequences(conn, stream, marks) and rewound is not None:
            rewound.add(stream)


async def write_batch(pool: Any, entries: list[Entry], *, rewound: set[str] | None = None) -> int:
    """Write entries in one transaction; returns how many were rejected.

    If the batch breaks a constraint, each entry is retried in its own
    savepoint and the ones that still fail are parked in sync_rejects, so one
    bad event cannot stall its stream. Streams whose events prove Redis went
    back in time are added to ``rewound``.
    """
    if not entries:
        return 0
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                await _apply(conn, entries)
                await _note_sequences(conn, entries, rewound)
            return 0
        except (
            asyncpg.IntegrityConstraintViolationError,
            asyncpg.DataError,
            ValueError,
            KeyError,
            TypeError,  # a payload that is JSON but not an object
        ):
            pass
        rejected = 0
        async with conn.transaction():
            for entry in entries:
                try:
                    async with conn.transaction():
                        await _apply(conn, [entry])
                except (
                    asyncpg.IntegrityConstraintViolationError,
                    asyncpg.DataError,
                    ValueError,
                    KeyError,
                    TypeError,
                ) as exc:
                    rejected += 1
                    log.error("sync rejected %s %s: %s", entry.stream, entry.entry_id, exc)
                    await conn.execute(
                        _INSERT_REJECT,
                        entry.stream,
                        entry.entry_id,
                        entry.payload.decode(errors="replace"),
                        f"{type(exc).__name__}: {exc}"[:1000],
                    )
            await _note_sequences(conn, entries, rewound)
        return rejected
