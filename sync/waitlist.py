"""Waitlist entries in the durable record: the drain's writes, restore's reads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from engine import WaitEntry

from .db import Conn, Pool
from .records import at, ms

__all__ = [
    "check_entries",
    "entries_for_restore",
    "entry_rows",
    "upsert_entries",
    "waitlist_counts",
    "write_events",
]

_COLUMNS = (
    "entry_id, slot_id, user_id, quantity, status, idempotency_key, seq, joined_at,"
    " lapses_at, offered_at, left_at, lapsed_at, hold_id, version"
)

_UPSERT = f"""
INSERT INTO waitlist_entries ({_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (entry_id) DO UPDATE SET
    status = excluded.status, offered_at = excluded.offered_at, left_at = excluded.left_at,
    lapsed_at = excluded.lapsed_at, hold_id = excluded.hold_id, version = excluded.version,
    idempotency_key = coalesce(waitlist_entries.idempotency_key, excluded.idempotency_key)
WHERE waitlist_entries.version < excluded.version
"""

_INSERT_EVENT = """
INSERT INTO waitlist_events (stream, entry_id, waitlist_id, slot_id, user_id, quantity,
                             status, version, occurred_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT DO NOTHING
"""


def entry_rows(entries: Iterable[WaitEntry]) -> list[tuple[Any, ...]]:
    return [
        (
            e.entry_id,
            e.slot_id,
            int(e.user_id),
            e.quantity,
            e.status,
            e.idempotency_key or None,
            e.seq,
            at(e.joined_at_ms),
            at(e.lapses_at_ms),
            at(e.offered_at_ms),
            at(e.left_at_ms),
            at(e.lapsed_at_ms),
            e.hold_id,
            e.version,
        )
        for e in entries
    ]


async def upsert_entries(conn: Conn | Pool, entries: Iterable[WaitEntry]) -> None:
    """Write entries as they are; a stored newer version wins."""
    await conn.executemany(_UPSERT, entry_rows(entries))


async def write_events(
    conn: Conn, sources: Sequence[tuple[str, str]], entries: Sequence[WaitEntry]
) -> None:
    """The drain's part: the entries' newest state and one audit row per event."""
    await upsert_entries(conn, entries)
    await conn.executemany(
        _INSERT_EVENT,
        [
            (
                stream,
                stream_id,
                e.entry_id,
                e.slot_id,
                int(e.user_id),
                e.quantity,
                e.status,
                e.version,
                at(e.changed_at_ms),
            )
            for (stream, stream_id), e in zip(sources, entries, strict=True)
        ],
    )


def _entry(row: asyncpg.Record) -> WaitEntry:
    return WaitEntry(
        entry_id=row["entry_id"],
        slot_id=int(row["slot_id"]),
        user_id=str(row["user_id"]),
        quantity=int(row["quantity"]),
        status=row["status"],
        joined_at_ms=_ms(row["joined_at"]),
        lapses_at_ms=_ms(row["lapses_at"]),
        seq=int(row["seq"]),
        version=int(row["version"]),
        idempotency_key=row["idempotency_key"] or "",
        offered_at_ms=ms(row["offered_at"]),
        left_at_ms=ms(row["left_at"]),
        lapsed_at_ms=ms(row["lapsed_at"]),
        hold_id=row["hold_id"],
    )


def _ms(value: datetime) -> int:
    return round(value.astimezone(UTC).timestamp() * 1000)


async def entries_for_restore(
    conn: Conn | Pool, slot_ids: Sequence[int], since: datetime
) -> list[WaitEntry]:
    """The entries a rebuilt partition gets back: every waiting one (in join order)
    and the finished ones that changed since ``since`` (still readable in Redis)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM waitlist_entries WHERE slot_id = ANY($1::bigint[])"
        " AND (status = 'waiting' OR coalesce(offered_at, left_at, lapsed_at) >= $2)"
        " ORDER BY seq",
        list(slot_ids),
        since,
    )
    return [_entry(r) for r in rows]


async def check_entries(
    redis_entries: Sequence[WaitEntry], pool: Pool, partitions: int, partition: int
) -> tuple[list[str], list[WaitEntry], bool]:
    """Reconcile's part: (problems, entries PostgreSQL lacks or has older, needs a
    rebuild). PostgreSQL ahead of Redis, or a waiting entry Redis lost, needs one."""
    in_redis = {e.entry_id: e for e in redis_entries}
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM waitlist_entries WHERE slot_id % $1 = $2"
        " AND (status = 'waiting' OR entry_id = ANY($3::text[]))",
        partitions,
        partition,
        list(in_redis),
    )
    in_pg = {r["entry_id"]: _entry(r) for r in rows}
    problems: list[str] = []
    behind: list[WaitEntry] = []
    rebuild = False
    for entry_id, r in in_redis.items():
        p = in_pg.get(entry_id)
        if p is None or p.version < r.version:
            was = "missing" if p is None else f"{p.status} v{p.version}"
            problems.append(f"entry {entry_id}: redis {r.status} v{r.version}, postgres {was}")
            behind.append(r)
        elif p.version > r.version or p.status != r.status:
            problems.append(
                f"entry {entry_id}: redis {r.status} v{r.version}, postgres {p.status} v{p.version}"
            )
            rebuild = True
    for entry_id, p in in_pg.items():
        if entry_id not in in_redis and p.status == "waiting":
            problems.append(f"entry {entry_id}: postgres waiting, missing in redis")
            rebuild = True
    return problems, behind, rebuild


async def waitlist_counts(pool: Pool) -> dict[str, int]:
    """For /metrics: entries waiting, offers made, taken (confirmed) and lapsed (expired)."""
    row = await pool.fetchrow(
        "SELECT count(*) FILTER (WHERE w.status = 'waiting') AS waiting,"
        " count(*) FILTER (WHERE w.status = 'offered') AS offers_made,"
        " count(*) FILTER (WHERE h.confirmed_at IS NOT NULL) AS offers_taken,"
        " count(*) FILTER (WHERE h.status = 'expired') AS offers_lapsed"
        " FROM waitlist_entries w LEFT JOIN holds h ON h.hold_id = w.hold_id"
    )
    assert row is not None
    return {
        name: int(row[name]) for name in ("waiting", "offers_made", "offers_taken", "offers_lapsed")
    }
