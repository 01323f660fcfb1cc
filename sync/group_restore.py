"""The hold group records a partition rebuild brings back (sync/restore.py).

A group's record lives in its home partition and its events go to that
partition's stream, so a rebuilt partition gets back the groups whose latest
event its stream recorded (group_events): confirmed ones always (a booking stays),
held and cancelled ones while Redis would still keep them (engine/group_load.py
drops the rest). The members' rows (holds.group_id) can be newer than the
group's latest event: a confirm, and the cancel of a confirmed group, write the
members through to PostgreSQL before the group's own event is drained, and that
event is lost with the stream. When every member says so, the group is rebuilt
confirmed (or cancelled) as its members are.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import orjson

from engine.group_models import Group, Member

from .db import Pool
from .records import ms

__all__ = ["groups_for_restore"]

_LATEST = """
WITH latest AS (
    SELECT DISTINCT ON (group_id) group_id, user_id, status, version, expires_at, members,
           occurred_at, created_at, idempotency_key
    FROM group_events WHERE stream = $1
    ORDER BY group_id, version DESC, event_id DESC
)
SELECT l.*, m.all_confirmed, m.all_cancelled, m.confirmed_at, m.cancelled_at,
       (SELECT min(f.occurred_at) FROM group_events f WHERE f.group_id = l.group_id) AS first_at
FROM latest l
LEFT JOIN LATERAL (
    SELECT bool_and(h.status = 'confirmed') AS all_confirmed,
           bool_and(h.status = 'cancelled') AS all_cancelled,
           max(h.confirmed_at) AS confirmed_at, max(h.cancelled_at) AS cancelled_at
    FROM holds h WHERE h.group_id = l.group_id
) m ON true
WHERE l.status = 'confirmed' OR m.all_confirmed
    OR greatest(l.expires_at, l.occurred_at, m.cancelled_at) > $2
ORDER BY l.group_id
"""


async def groups_for_restore(pool: Pool, stream: str, since: datetime) -> list[Group]:
    """The groups of a home partition's stream that a rebuild stores: confirmed ones,
    and the rest whose expiry or last change is after ``since`` (the retention)."""
    return [_group(r) for r in await pool.fetch(_LATEST, stream, since)]


def _group(row: asyncpg.Record) -> Group:
    status, version = row["status"], row["version"]
    confirmed_at = cancelled_at = None
    if status != "cancelled" and row["all_cancelled"]:
        status, version, cancelled_at = "cancelled", version + 2, ms(row["cancelled_at"])
    elif status == "held" and row["all_confirmed"]:
        status, version, confirmed_at = "confirmed", version + 2, ms(row["confirmed_at"])
    elif status == "confirmed":
        confirmed_at = ms(row["occurred_at"])
    elif status == "cancelled":
        cancelled_at = ms(row["occurred_at"])
    members = orjson.loads(row["members"])
    return Group(
        group_id=row["group_id"],
        user_id=str(row["user_id"]),
        status=status,
        created_at_ms=ms(row["created_at"] or row["first_at"]) or 0,
        expires_at_ms=ms(row["expires_at"]) or 0,
        version=version,
        members=tuple(Member(str(m[0]), int(m[1]), int(m[2])) for m in members),
        confirmed_at_ms=confirmed_at,
        cancelled_at_ms=cancelled_at,
        idempotency_key=row["idempotency_key"] or "",
    )
