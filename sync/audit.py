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
from collections.abc import Sequence
from typing import Any

from engine import Engine

__all__ = ["park_conflicts", "postgres_only_live_holds"]

log = logging.getLogger("slotkeeper.sync")

_PARK = """
INSERT INTO sync_rejects (stream, entry_id, payload, error) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
"""


async def park_conflicts(conn: Any, conflicts: Sequence[Any], payloads: Sequence[bytes]) -> int:
    """Park the events whose dedupe key is already on record with another content;
    returns how many. ``conflicts`` are sync/hold_batch.py's rows (one per event:
    ``ord`` is its 1-based place in ``payloads``, ``known_*`` the row on record)."""
    for c in conflicts:
        error = (
            f"audit conflict: {c['stream']} {c['entry_id']} says hold {c['hold_id']}"
            f" v{c['version']} {c['status']} x{c['quantity']}; on record"
            f" {c['known_stream']} {c['known_entry']}: hold {c['known_hold']}"
            f" v{c['known_version']} {c['known_status']} x{c['known_quantity']}"
        )
        log.error("%s", error)
        payload = payloads[c["ord"] - 1].decode(errors="replace")
        await conn.execute(_PARK, c["stream"], c["entry_id"], payload, error)
    return len(conflicts)


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
