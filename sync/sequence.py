"""Redis going back in time: each partition's events carry a sequence (lua/lib.lua),
PostgreSQL keeps the highest it applied, with the stream entry id that carried it.

In one Redis history a partition's sequence and its stream entry ids grow
together. Redis that went back in time (a failover to a replica that missed the
last writes, an old AOF or RDB restored) hands out sequence numbers again, on
entries with newer ids (stream ids follow the clock). So an event applied here
whose entry id is above the recorded one but whose sequence is not is proof of
a rewind, and so is a built partition whose sequence is below the recorded one.
Either way the partition is failed closed and rebuilt from PostgreSQL
(sync/restore.py), which then sets its sequence to the recorded one.

Applied out of order (a confirm's write-through racing the drain) the pairs
still agree, so the check has no false alarms; see docs/durability.md for how
long a rewound partition can sell before it is caught.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import orjson

from engine import Engine
from engine.sequence import fail_closed, partition_sequences

__all__ = ["fail_rewound_partitions", "note_sequences", "recorded_sequence", "sequence_marks"]

log = logging.getLogger("slotkeeper.sync")

Mark = tuple[int, int, int]  # (sequence, stream entry id's ms, its number)


def _entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, no = entry_id.partition("-")
    return int(ms), int(no or 0)


def sequence_marks(items: Iterable[tuple[str, bytes]]) -> list[Mark]:
    """(sequence, entry id as ms and number) of each (entry id, event JSON) that
    carries a sequence."""
    marks = []
    for entry_id, payload in items:
        try:
            seq = orjson.loads(payload).get("n")
            ms, no = _entry_key(entry_id)
        except (orjson.JSONDecodeError, AttributeError, ValueError):
            continue
        if isinstance(seq, int) and not isinstance(seq, bool):
            marks.append((seq, ms, no))
    return marks


async def note_sequences(conn: Any, stream: str, marks: list[Mark]) -> bool:
    """Record the highest sequence applied on ``stream`` (in the caller's
    transaction); True when ``marks`` prove the partition went back in time."""
    if not marks:
        return False
    seq, ms, no = max(marks)  # the highest sequence, the newest entry among equals
    # One round trip: the row as it was (locked until commit), and the upsert.
    row = await conn.fetchrow(
        "WITH was AS (SELECT seq, entry_ms, entry_no FROM partition_sequences"
        " WHERE stream = $1 FOR UPDATE),"
        " up AS (INSERT INTO partition_sequences AS p (stream, seq, entry_ms, entry_no)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (stream) DO UPDATE SET seq = excluded.seq,"
        " entry_ms = excluded.entry_ms, entry_no = excluded.entry_no, updated_at = now()"
        " WHERE p.seq < excluded.seq)"
        " SELECT seq, entry_ms, entry_no FROM was",
        stream,
        seq,
        ms,
        no,
    )
    rewound = False
    if row is not None:
        recorded = (row["entry_ms"], row["entry_no"])
        rewound = any((m, n) > recorded and s <= row["seq"] for s, m, n in marks)
    if rewound:
        log.error("events of %s went back in time: sequence reused after %s", stream, row)
    return rewound


async def recorded_sequence(pool: Any, stream: str) -> int:
    """The highest sequence PostgreSQL applied for a partition stream (0: none)."""
    value = await pool.fetchval("SELECT seq FROM partition_sequences WHERE stream = $1", stream)
    return int(value or 0)


async def fail_rewound_partitions(engine: Engine, redis: Any, pool: Any) -> list[int]:
    """Fail closed every built partition whose Redis sequence is behind PostgreSQL's.

    PostgreSQL is read first: what it recorded, Redis had issued before, so a
    partition that did not go back in time can only be ahead when read after.
    """
    streams = [engine.keys.events(p) for p in range(engine.settings.partitions)]
    rows = await pool.fetch(
        "SELECT stream, seq FROM partition_sequences WHERE stream = ANY($1::text[])", streams
    )
    recorded = {r["stream"]: r["seq"] for r in rows}
    behind = []
    for partition, seq in (await partition_sequences(redis, engine.keys)).items():
        floor = recorded.get(engine.keys.events(partition), 0)
        if seq < floor:
            log.error(
                "partition %s went back in time (sequence %s, postgres has %s): failing it closed",
                partition,
                seq,
                floor,
            )
            await fail_closed(redis, engine.keys, partition)
            behind.append(partition)
    return behind
