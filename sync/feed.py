"""The event feed: every transition of the durable record as one row of ``feed``.

Written by whoever writes the audit trail, in the same transaction (today the
drain, through ``append``); read by ``GET /events``, its SSE stream and the
webhook outbox. A new kind of event is new rows with a new ``type``, nothing else.

Commit order is id order: ids are drawn under a transaction-level advisory lock
that is held until commit, so no transaction can commit an id below one that is
already visible. A cursor (the last id seen) therefore never skips an event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from . import outbox
from .hold_batch import iso_ms_sql, joined, joined_payloads, occurred_sql

if TYPE_CHECKING:  # events.py calls append(): no import cycle at run time
    from .events import Entry

__all__ = ["EVENT_TYPES", "FeedEvent", "append", "latest_id", "read"]

# Every type the feed can carry (`<thing>.<what happened>`); filters are checked
# against it.
EVENT_TYPES = (
    "hold.held",
    "hold.confirmed",
    "hold.cancelled",
    "hold.expired",
    "group.held",
    "group.confirmed",
    "group.cancelled",
    "hold.extended",
    "slot.created",
    "slot.updated",
    "waitlist.waiting",
    "waitlist.offered",
    "waitlist.left",
    "waitlist.lapsed",
)

# Any constant works; every writer of the feed takes the same one.
_FEED_LOCK = 0x5F_EE_D0_01
NOTIFY_CHANNEL = "slotkeeper_feed"

_HOLD_TIMES = {"c": "created_at", "e": "expires_at", "cf": "confirmed_at"}
_HOLD_TIMES |= {"ca": "cancelled_at", "xa": "expired_at"}
_OCCURRED = {"held": "c", "confirmed": "cf", "cancelled": "ca", "expired": "xa"}


@dataclass(frozen=True, slots=True)
class FeedEvent:
    feed_id: int
    type: str
    slot_id: int | None
    occurred_at: datetime
    data: dict[str, Any]

    def body(self) -> dict[str, Any]:
        """The public shape (feed, stream and webhook payloads alike)."""
        return {
            "id": str(self.feed_id),
            "type": self.type,
            "timestamp": _iso(self.occurred_at),
            "slot_id": self.slot_id,
            "data": self.data,
        }


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _at(ms: Any) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


# A hold event's row is built in PostgreSQL (_INSERT); _hold_row says the same in
# Python (the tests compare the two).


def _hold_row(entry: Entry) -> tuple[str, int, datetime, dict[str, Any]]:
    d = orjson.loads(entry.payload)
    status = d["st"]
    data: dict[str, Any] = {
        "hold_id": d["i"],
        "slot_id": int(d["s"]),
        "user_id": int(d["u"]),
        "quantity": int(d["q"]),
        "status": status,
        "version": int(d["v"]),
    }
    for short, name in _HOLD_TIMES.items():
        if d.get(short) is not None:
            data[name] = _iso(_at(d[short]))
    if d.get("x") == "extended":
        data["extensions"] = int(d["xn"])
        return "hold.extended", int(d["s"]), _at(d["t"]), data
    if d.get("r"):
        data["released"] = int(d["r"])  # a partial confirm gave these back
    return f"hold.{status}", int(d["s"]), _at(d[_OCCURRED[status]]), data


_ENTRY_TIMES = {"c": "joined_at", "e": "lapses_at", "oa": "offered_at"}
_ENTRY_TIMES |= {"la": "left_at", "xa": "lapsed_at"}
_ENTRY_OCCURRED = {"waiting": "c", "offered": "oa", "left": "la", "lapsed": "xa"}


def _entry_row(entry: Entry) -> tuple[str, int, datetime, dict[str, Any]]:
    d = orjson.loads(entry.payload)
    status = d["st"]
    data: dict[str, Any] = {
        "entry_id": d["i"],
        "slot_id": int(d["s"]),
        "user_id": int(d["u"]),
        "quantity": int(d["q"]),
        "status": status,
        "version": int(d["v"]),
    }
    if d.get("h"):
        data["hold_id"] = d["h"]
    for short, name in _ENTRY_TIMES.items():
        if d.get(short) is not None:
            data[name] = _iso(_at(d[short]))
    return f"waitlist.{status}", int(d["s"]), _at(d[_ENTRY_OCCURRED[status]]), data


def _group_row(entry: Entry) -> tuple[str, int | None, datetime, dict[str, Any]]:
    """One row per group event, slot_id null (a group spans slots): the members,
    with their slots, are in its data (docs/decisions.md, "Hold groups")."""
    d = orjson.loads(entry.payload)
    data: dict[str, Any] = {
        "group_id": d["i"],
        "user_id": int(d["u"]),
        "status": d["st"],
        "version": int(d["v"]),
        "expires_at": _iso(_at(d["e"])),
        "members": [
            {"hold_id": str(m[0]), "slot_id": int(m[1]), "quantity": int(m[2])} for m in d["m"]
        ],
    }
    return f"group.{d['st']}", None, _at(d["t"]), data


def _slot_row(entry: Entry, created: bool) -> tuple[str, int, datetime, dict[str, Any]]:
    d = orjson.loads(entry.payload)
    attrs = orjson.loads(d["meta"]) if d.get("meta") else {}
    data = {
        "slot_id": int(d["id"]),
        "capacity": int(d["cap"]),
        "remaining": int(d["rem"]),
        "held": int(d["held"]),
        "confirmed": int(d["conf"]),
        "state": d["state"],
        **{k: attrs[k] for k in ("label", "starts_at", "ends_at") if attrs.get(k) is not None},
    }
    return ("slot.created" if created else "slot.updated"), int(d["id"]), _at(d["t"]), data


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def _first_slot_entries(conn: Any, entries: Sequence[Entry]) -> set[tuple[str, str]]:
    """The (stream, entry) that first recorded each slot: its event is slot.created.

    A slot lives in one partition, so its entries are ordered by their stream ids
    (even when a claimed batch is written after a later one).
    """
    slot_ids = {int(orjson.loads(e.payload)["id"]) for e in entries if e.kind == "s"}
    if not slot_ids:
        return set()
    rows = await conn.fetch(
        "SELECT slot_id, stream, entry_id FROM slot_events WHERE slot_id = ANY($1::bigint[])",
        list(slot_ids),
    )
    first: dict[int, tuple[str, str]] = {}
    for r in rows:
        known = first.get(r["slot_id"])
        if known is None or _entry_order(r["entry_id"]) < _entry_order(known[1]):
            first[r["slot_id"]] = (r["stream"], r["entry_id"])
    return set(first.values())


def _hold_data_sql() -> str:
    """A hold event's feed data built from its payload ``d`` in PostgreSQL: the keys
    and values _hold_row writes (json keeps their order; absent times left out)."""
    times = ", ".join(f"'{name}', {iso_ms_sql(short)}" for short, name in _HOLD_TIMES.items())
    return (
        "json_strip_nulls(json_build_object('hold_id', d->>'i', 'slot_id', (d->>'s')::bigint,"
        " 'user_id', (d->>'u')::bigint, 'quantity', (d->>'q')::integer, 'status', d->>'st',"
        f" 'version', (d->>'v')::integer, {times},"
        " 'extensions', CASE WHEN d->>'x' = 'extended' THEN (d->>'xn')::integer END,"
        " 'released', CASE WHEN coalesce(d->>'x', '') <> 'extended'"
        " AND coalesce((d->>'r')::integer, 0) <> 0 THEN (d->>'r')::integer END))"
    )


# Rows come in stream order; hold events are built here from their payload, the
# others in Python (``built``, by place in the batch). Ids are drawn here, sorted,
# one per row in order. Texts come joined (sync/hold_batch.py's ``joined``).
_INSERT = f"""
WITH r AS MATERIALIZED (  -- each payload parsed once
    SELECT r.ord, r.source, r.source_id, b.type, b.slot_id, b.occurred_at, b.data,
           CASE WHEN b.ord IS NULL THEN r.payload::jsonb END AS d
    FROM unnest(string_to_array($1, E'\\x1e'), string_to_array($2, E'\\x1e'),
                string_to_array($3, E'\\x1e'))
         WITH ORDINALITY AS r (source, source_id, payload, ord)
    LEFT JOIN json_to_recordset($4::json)
         AS b (ord bigint, type text, slot_id bigint, occurred_at timestamptz, data json)
         ON b.ord = r.ord
),
ids AS (
    SELECT id, row_number() OVER (ORDER BY id) AS ord
    FROM (SELECT nextval('feed_ids') AS id FROM generate_series(1, $5::integer)) AS drawn
),
ins AS (
    INSERT INTO feed (feed_id, type, slot_id, occurred_at, data, source, source_id)
    SELECT ids.id,
           coalesce(r.type, CASE WHEN d->>'x' = 'extended' THEN 'hold.extended'
                                 ELSE 'hold.' || (d->>'st') END),
           CASE WHEN d IS NULL THEN r.slot_id ELSE (d->>'s')::bigint END,
           coalesce(r.occurred_at, {occurred_sql()}),
           coalesce(r.data, {_hold_data_sql()}),
           r.source, r.source_id
    FROM r JOIN ids USING (ord) ORDER BY ids.id
    ON CONFLICT (source, source_id) DO NOTHING
    RETURNING feed_id, type, slot_id
),
outbox AS ({outbox.ENQUEUE.format(source="ins", where="")})
SELECT pg_notify($6, '') FROM (SELECT 1 FROM ins LIMIT 1) AS any_new
"""


async def append(conn: Any, entries: Sequence[Entry]) -> None:
    """Feed rows (and their webhook outbox rows) for audit entries just written in
    ``conn``'s transaction. Entries already in the feed are skipped."""
    if not entries:
        return
    entries = [e for e in entries if e.kind in ("h", "s", "w", "g")]
    if not entries:
        return
    created = await _first_slot_entries(conn, entries)
    built = []
    for ord_, e in enumerate(entries, 1):
        if e.kind == "h":
            continue
        row = (
            _entry_row(e)
            if e.kind == "w"
            else _group_row(e)
            if e.kind == "g"
            else _slot_row(e, (e.stream, e.entry_id) in created)
        )
        built.append(
            {
                "ord": ord_,
                "type": row[0],
                "slot_id": row[1],
                "occurred_at": row[2].isoformat(),
                "data": row[3],
            }
        )
    # Held until commit: ids drawn after it are above every id already committed.
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _FEED_LOCK)
    await conn.execute(
        _INSERT,
        joined([e.stream for e in entries]),
        joined([e.entry_id for e in entries]),
        joined_payloads([e.payload if e.kind == "h" else b"null" for e in entries]),
        orjson.dumps(built).decode(),
        len(entries),
        NOTIFY_CHANNEL,
    )


def _event(row: Any) -> FeedEvent:
    data = row["data"]
    return FeedEvent(
        feed_id=int(row["feed_id"]),
        type=row["type"],
        slot_id=row["slot_id"],
        occurred_at=row["occurred_at"],
        data=orjson.loads(data) if isinstance(data, str | bytes) else data,
    )


async def read(
    pool: Any,
    *,
    after: int = 0,
    limit: int = 100,
    slot_id: int | None = None,
    types: Sequence[str] = (),
) -> list[FeedEvent]:
    """Events after the cursor ``after``, oldest first, at most ``limit``."""
    rows = await pool.fetch(
        "SELECT feed_id, type, slot_id, occurred_at, data FROM feed"
        " WHERE feed_id > $1 AND ($2::bigint IS NULL OR slot_id = $2)"
        " AND (cardinality($3::text[]) = 0 OR type = ANY($3::text[]))"
        " ORDER BY feed_id LIMIT $4",
        after,
        slot_id,
        list(types),
        limit,
    )
    return [_event(r) for r in rows]


async def latest_id(pool: Any) -> int:
    """The newest event's id (0 when the feed is empty): where a live reader starts."""
    return int(await pool.fetchval("SELECT coalesce(max(feed_id), 0) FROM feed"))
