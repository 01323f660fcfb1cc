"""A run of hold events written by one statement: the stream's JSON payloads go to
PostgreSQL as one array and are unpacked there.

The statement upserts the holds (each hold's newest version in the run; a stored
newer version wins, records.NEWER_HOLDS_CONFLICT), inserts one hold_events row per
entry (a dedupe key already on record: skipped) and returns the entries whose
dedupe key was already on record with another content, for sync/audit.py to park.
Python only decodes the payload bytes to text. A payload PostgreSQL cannot read
(not JSON, a field missing or of the wrong type) fails the statement with a data
or constraint error, and sync/events.py retries the batch entry by entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .records import HOLD_COLUMNS, NEWER_HOLDS_CONFLICT

if TYPE_CHECKING:
    from .events import Entry

__all__ = ["iso_ms_sql", "joined", "joined_payloads", "ms_sql", "occurred_sql", "write_holds"]


def ms_sql(field: str, source: str = "d") -> str:
    """The timestamptz of a JSON field holding Unix milliseconds (NULL if absent)."""
    return f"('epoch'::timestamptz + ({source}->>'{field}')::bigint * interval '1 millisecond')"


def iso_ms_sql(field: str, source: str = "d") -> str:
    """The same instant as ISO 8601 text in UTC with milliseconds, as sync/feed.py
    writes it from Python (``2026-01-02T03:04:05.678Z``)."""
    return (
        f"to_char({ms_sql(field, source)} AT TIME ZONE 'UTC',"
        """ 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""
    )


def occurred_sql(source: str = "d") -> str:
    """When the event happened: an extension's t, else the time of its status."""
    d = source
    return (
        f"CASE WHEN {d}->>'x' = 'extended' THEN {ms_sql('t', d)}"
        f" ELSE CASE {d}->>'st' WHEN 'held' THEN {ms_sql('c', d)}"
        f" WHEN 'confirmed' THEN {ms_sql('cf', d)} WHEN 'cancelled' THEN {ms_sql('ca', d)}"
        f" WHEN 'expired' THEN {ms_sql('xa', d)} END END"
    )


_WRITE = f"""
WITH raw AS MATERIALIZED (  -- each payload parsed once
    SELECT r.ord, r.stream, r.entry_id, r.payload::jsonb AS d
    FROM unnest(string_to_array($1, E'\\x1e'), string_to_array($2, E'\\x1e'),
                string_to_array($3, E'\\x1e'))
         WITH ORDINALITY AS r (stream, entry_id, payload, ord)
),
ev AS (
    SELECT ord, stream, entry_id,
           d->>'i' AS hold_id, (d->>'s')::bigint AS slot_id, (d->>'u')::bigint AS user_id,
           (d->>'q')::integer AS quantity, d->>'st' AS status, (d->>'v')::integer AS version,
           nullif(d->>'k', '') AS idempotency_key,
           {ms_sql("c")} AS created_at, {ms_sql("e")} AS expires_at,
           {ms_sql("cf")} AS confirmed_at, {ms_sql("ca")} AS cancelled_at,
           {ms_sql("xa")} AS expired_at,
           coalesce((d->>'xn')::smallint, 0) AS extensions, nullif(d->>'g', '') AS group_id,
           coalesce(d->>'x' = 'extended', false) AS extended,
           coalesce((d->>'r')::integer, 0) AS released,
           {occurred_sql()} AS occurred_at
    FROM raw
),
newest AS (  -- one row per hold (an upsert cannot change a row twice)
    SELECT DISTINCT ON (hold_id) hold_id, slot_id, user_id, quantity, status,
           max(idempotency_key) OVER (PARTITION BY hold_id) AS idempotency_key,
           created_at, expires_at, confirmed_at, cancelled_at, expired_at, version,
           extensions, max(group_id) OVER (PARTITION BY hold_id) AS group_id
    FROM ev ORDER BY hold_id, version DESC, ord
),
up AS (
    INSERT INTO holds ({HOLD_COLUMNS})
    SELECT {HOLD_COLUMNS} FROM newest ORDER BY hold_id
    {NEWER_HOLDS_CONFLICT}
),
ins AS (
    INSERT INTO hold_events (stream, entry_id, hold_id, slot_id, user_id, quantity, status,
                             version, occurred_at, extended, released)
    SELECT stream, entry_id, hold_id, slot_id, user_id, quantity, status, version,
           occurred_at, extended, released
    FROM ev ORDER BY ord
    ON CONFLICT DO NOTHING
    RETURNING stream, entry_id
),
skipped AS (  -- a dedupe key already on record (the statement sees the rows before it)
    SELECT ev.* FROM ev
    WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.stream = ev.stream AND ins.entry_id = ev.entry_id)
)
SELECT DISTINCT ON (s.ord) s.ord, s.stream, s.entry_id, s.hold_id, s.version, s.status,
       s.quantity, k.stream AS known_stream, k.entry_id AS known_entry, k.hold_id AS known_hold,
       k.version AS known_version, k.status AS known_status, k.quantity AS known_quantity
FROM skipped s
CROSS JOIN LATERAL (
    SELECT 1 AS rank, e.* FROM hold_events e WHERE e.hold_id = s.hold_id AND e.version = s.version
    UNION ALL
    SELECT 2, e.* FROM hold_events e WHERE e.stream = s.stream AND e.entry_id = s.entry_id
) AS k
WHERE (k.hold_id, k.version, k.status, k.quantity)
      IS DISTINCT FROM (s.hold_id, s.version, s.status, s.quantity)
ORDER BY s.ord, k.rank
"""


async def write_holds(conn: Any, run: Sequence[Entry]) -> list[Any]:
    """Write a run of hold events; returns the conflicting ones (rows with ``ord``,
    1-based in ``run``, the event's key fields and the ``known_*`` row on record)."""
    rows: list[Any] = await conn.fetch(
        _WRITE,
        joined([e.stream for e in run]),
        joined([e.entry_id for e in run]),
        joined_payloads([e.payload for e in run]),
    )
    return rows


SEPARATOR = "\x1e"  # ASCII record separator: JSON text never holds it unescaped


def joined(texts: Sequence[str]) -> str:
    """One text for PostgreSQL's string_to_array(..., E'\\x1e'): an array of many
    texts costs asyncpg a type check per element, one text costs a copy."""
    text = SEPARATOR.join(texts)
    if text.count(SEPARATOR) != len(texts) - 1:
        raise ValueError("a text to join holds the separator \\x1e")
    return text


def joined_payloads(payloads: Sequence[bytes]) -> str:
    """Payloads, joined (a payload that is not UTF-8 raises ValueError)."""
    text = b"\x1e".join(payloads).decode()
    if not text:  # one empty payload: string_to_array would make no element of it
        raise ValueError("an empty payload")
    if text.count(SEPARATOR) != len(payloads) - 1:
        raise ValueError("a payload holds the separator \\x1e")
    return text
