"""Stream entries -> rows of the durable record, written in one transaction per batch."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from engine import SlotEvent, WaitEntry

from . import feed, waitlist
from .archived import apply_archive_events
from .audit import park_conflicts
from .db import Conn, Pool
from .hold_batch import write_holds
from .records import at, upsert_slots
from .sequence import note_sequences, sequence_marks

__all__ = ["Entry", "apply_entries", "lock_partitions", "write_batch"]

log = logging.getLogger("slotkeeper.sync")


@dataclass(frozen=True, slots=True)
class Entry:
    stream: str
    entry_id: str
    kind: str  # 'h' hold, 's' slot, 'w' waitlist entry, 'g' group, 'a' slot archived
    payload: bytes


def _slot_event(entry: Entry, event: SlotEvent) -> tuple[Any, ...]:
    slot = event.slot
    return (
        entry.stream,
        entry.entry_id,
        slot.slot_id,
        slot.capacity,
        slot.state,
        orjson.dumps(slot.attributes).decode(),
        at(event.at_ms),
    )


_INSERT_SLOT_EVENT = """
INSERT INTO slot_events (stream, entry_id, slot_id, capacity, state, attributes, occurred_at)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)
ON CONFLICT DO NOTHING
"""
_INSERT_GROUP_EVENT = """
INSERT INTO group_events (stream, entry_id, group_id, user_id, status, version, expires_at,
                          members, occurred_at, created_at, idempotency_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11)
ON CONFLICT DO NOTHING
"""


def _group_event(entry: Entry) -> tuple[Any, ...]:
    """A group event (lua/group_home.lua): the group JSON plus t, when it happened."""
    d = orjson.loads(entry.payload)
    members = [[str(m[0]), int(m[1]), int(m[2])] for m in d["m"]]
    return (
        entry.stream,
        entry.entry_id,
        str(d["i"]),
        int(d["u"]),
        str(d["st"]),
        int(d["v"]),
        at(int(d["e"])),
        orjson.dumps(members).decode(),
        at(int(d["t"])),
        at(int(d["c"])),
        str(d.get("k") or "") or None,
    )


_INSERT_REJECT = """
INSERT INTO sync_rejects (stream, entry_id, payload, error) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
"""


async def _apply(conn: Conn, entries: list[Entry], *, with_feed: bool = True) -> None:
    """Apply in stream order; consecutive entries of one kind go in one executemany."""
    run: list[Entry] = []
    for entry in [*entries, None]:
        if run and (entry is None or entry.kind != run[0].kind):
            if run[0].kind == "h":  # one statement, unpacked in PostgreSQL
                conflicts = await write_holds(conn, run)
                if conflicts:
                    await park_conflicts(conn, conflicts, [e.payload for e in run])
            elif run[0].kind == "w":
                waits = [WaitEntry.from_stored(e.payload) for e in run]
                await waitlist.write_events(conn, [(e.stream, e.entry_id) for e in run], waits)
            elif run[0].kind == "g":
                await conn.executemany(_INSERT_GROUP_EVENT, [_group_event(e) for e in run])
            elif run[0].kind == "a":  # a slot left Redis (sync/archive.py)
                await apply_archive_events(conn, [e.payload for e in run])
            else:
                slots = [SlotEvent.decode(e.payload) for e in run]
                await upsert_slots(conn, [s.slot for s in slots])
                events = [_slot_event(e, s) for e, s in zip(run, slots, strict=True)]
                await conn.executemany(_INSERT_SLOT_EVENT, events)
            run = []
        if entry is not None:
            run.append(entry)
    if with_feed:
        await feed.append(conn, entries)  # the feed and webhook outbox, same transaction


# Any constant works; every writer of a partition's holds takes the same one.
_PARTITION_LOCK = 0x5107_0001


async def lock_partitions(conn: Conn, streams: Iterable[str]) -> None:
    """Take the transaction-level lock of each partition (named by its stream),
    in one order, before any of its rows: the drain, a confirm's write-through
    and a group's write each write holds and their slots' confirmed counters
    (a trigger) in their own order, and would otherwise deadlock one another."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1::int, h) FROM"
        " (SELECT DISTINCT hashtext(s) AS h FROM unnest($2::text[]) AS s ORDER BY h) AS x",
        _PARTITION_LOCK,
        sorted(set(streams)),
    )


async def apply_entries(conn: Conn, entries: list[Entry]) -> None:
    """Apply entries in the caller's transaction (the confirm's write-through).

    Not into the event feed: the drain appends them there in stream order, so the
    feed keeps each slot's order (a confirm is written through before the drain
    may have written its hold's `held` event). What Redis loses before the drain
    reads it is put in the feed by the rebuild (sync/restore.py)."""
    await _apply(conn, entries, with_feed=False)


async def _note_sequences(conn: Conn, entries: list[Entry], rewound: set[str] | None) -> None:
    """Record each stream's highest event sequence (sync/sequence.py)."""
    for stream in dict.fromkeys(e.stream for e in entries):
        # Hold, slot and archive events carry the partition's sequence ("n"); a waitlist
        # entry's "n" is its place in the line.
        marks = sequence_marks(
            (e.entry_id, e.payload)
            for e in entries
            if e.stream == stream and e.kind in ("h", "s", "a")
        )
        if await note_sequences(conn, stream, marks) and rewound is not None:
            rewound.add(stream)


async def write_batch(pool: Pool, entries: list[Entry], *, rewound: set[str] | None = None) -> int:
    """Write entries in one transaction; returns how many were rejected.

    If the batch breaks a constraint, each entry is retried in its own
    savepoint and the ones that still fail are parked in sync_rejects, so one
    bad event cannot stall its stream. Streams whose events prove Redis went
    back in time are added to ``rewound``.
    """
    if not entries:
        return 0
    streams = {e.stream for e in entries}
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                await lock_partitions(conn, streams)
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
            await lock_partitions(conn, streams)
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
