"""Compare Redis and PostgreSQL slot by slot; repair drift.

Redis is the live truth for what it holds; PostgreSQL is the durable record.
Repair therefore goes in two steps: first every change Redis knows and
PostgreSQL lacks is written to PostgreSQL (newer versions win), then any
partition that still disagrees (PostgreSQL knows a live hold Redis lost, or the
counters do not add up) is rebuilt from PostgreSQL, which by then holds the
union of both.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from engine import Engine, Hold, WaitEntry
from engine.client import RedisClient

from .db import Pool
from .drain import drain_stream
from .records import HOLD_COLUMNS, hold_from_row, upsert_holds
from .restore import restore_partition
from .waitlist import check_entries, upsert_entries

__all__ = ["Drift", "check_partition", "reconcile"]


@dataclass
class Drift:
    partition: int
    problems: list[str] = field(default_factory=list)
    # Holds Redis has at a newer version than PostgreSQL (fixable by a write).
    behind_in_postgres: list[Hold] = field(default_factory=list)
    # Waitlist entries Redis has at a newer version than PostgreSQL.
    entries_behind: list[WaitEntry] = field(default_factory=list)
    # PostgreSQL knows better than Redis: only a rebuild fixes it.
    needs_rebuild: bool = False

    @property
    def clean(self) -> bool:
        return not self.problems


async def check_partition(engine: Engine, pool: Pool, partition: int) -> Drift:
    drift = Drift(partition)
    partitions = engine.settings.partitions
    redis_slots = {s.slot_id: s for s in await engine.partition_slots(partition)}
    redis_holds = {h.hold_id: h for h in await engine.partition_holds(partition)}
    pg_slots = {
        r["slot_id"]: r
        for r in await pool.fetch(
            # Archived slots left Redis on purpose (sync/archive.py): no drift.
            "SELECT slot_id, capacity, state FROM slots WHERE slot_id % $1 = $2"
            " AND archived_at IS NULL",
            partitions,
            partition,
        )
    }
    pg_holds = {
        r["hold_id"]: hold_from_row(r)
        for r in await pool.fetch(
            f"SELECT {HOLD_COLUMNS} FROM holds WHERE slot_id % $1 = $2"
            " AND (status IN ('held', 'confirmed') OR hold_id = ANY($3::text[]))"
            " AND slot_id IN (SELECT slot_id FROM slots WHERE archived_at IS NULL)",
            partitions,
            partition,
            list(redis_holds),
        )
    }

    for hold_id, r_hold in redis_holds.items():
        p_hold = pg_holds.get(hold_id)
        if p_hold is None or p_hold.version < r_hold.version:
            was = "missing" if p_hold is None else f"{p_hold.status} v{p_hold.version}"
            drift.problems.append(
                f"hold {hold_id}: redis {r_hold.status} v{r_hold.version}, postgres {was}"
            )
            drift.behind_in_postgres.append(r_hold)
        elif p_hold.version > r_hold.version or p_hold.status != r_hold.status:
            drift.problems.append(
                f"hold {hold_id}: redis {r_hold.status} v{r_hold.version},"
                f" postgres {p_hold.status} v{p_hold.version}"
            )
            drift.needs_rebuild = True
    for hold_id, p_hold in pg_holds.items():
        if hold_id not in redis_holds and p_hold.status in ("held", "confirmed"):
            drift.problems.append(f"hold {hold_id}: postgres {p_hold.status}, missing in redis")
            drift.needs_rebuild = True

    entries = await engine.waitlist.partition_entries(partition)
    problems, drift.entries_behind, rebuild = await check_entries(
        entries, pool, partitions, partition
    )
    drift.problems.extend(problems)
    drift.needs_rebuild = drift.needs_rebuild or rebuild

    # Counters: what Redis says against what the holds PostgreSQL knows add up to.
    sums: dict[int, dict[str, int]] = defaultdict(lambda: {"held": 0, "confirmed": 0})
    for hold in {**pg_holds, **{h.hold_id: h for h in drift.behind_in_postgres}}.values():
        if hold.status in ("held", "confirmed"):
            sums[hold.slot_id][hold.status] += hold.quantity
    for slot_id in sorted(set(redis_slots) | set(pg_slots)):
        r_slot, p_slot = redis_slots.get(slot_id), pg_slots.get(slot_id)
        if r_slot is None or p_slot is None:
            side = "redis" if r_slot is None else "postgres"
            drift.problems.append(f"slot {slot_id}: missing in {side}")
            drift.needs_rebuild = drift.needs_rebuild or r_slot is None
            continue
        expected = sums[slot_id]
        redis_view = (r_slot.capacity, r_slot.state, r_slot.held, r_slot.confirmed)
        pg_view = (p_slot["capacity"], p_slot["state"], expected["held"], expected["confirmed"])
        if redis_view != pg_view or r_slot.remaining != r_slot.capacity - sum(redis_view[2:]):
            drift.problems.append(
                f"slot {slot_id}: redis capacity/state/held/confirmed {redis_view},"
                f" postgres {pg_view}, redis remaining {r_slot.remaining}"
            )
            drift.needs_rebuild = True
    return drift


async def _repair_in_postgres(pool: Pool, holds: list[Hold]) -> None:
    """Write what Redis knows and PostgreSQL lacks, and record it as a repair
    (the audit table keeps only what the streams said)."""
    async with pool.acquire() as conn, conn.transaction():
        await upsert_holds(conn, holds, newer_only=True)
        await conn.executemany(
            "INSERT INTO hold_repairs (hold_id, version, status, source)"
            " VALUES ($1, $2, $3, 'reconcile')",
            [(h.hold_id, h.version, h.status) for h in holds],
        )


async def reconcile(
    engine: Engine,
    redis: RedisClient,
    pool: Pool,
    *,
    repair: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[Drift]:
    """Drain, compare every partition, repair if asked; returns drift found (before repair)."""
    found = []
    for partition in range(engine.settings.partitions):
        await drain_stream(engine, redis, pool, partition, consumer="reconcile")
        drift = await check_partition(engine, pool, partition)
        if not drift.clean:
            found.append(drift)
            if repair:
                if drift.behind_in_postgres:
                    await _repair_in_postgres(pool, drift.behind_in_postgres)
                if drift.entries_behind:
                    await upsert_entries(pool, drift.entries_behind)
                if (
                    drift.needs_rebuild
                    or not (await check_partition(engine, pool, partition)).clean
                ):
                    await restore_partition(engine, redis, pool, partition)
        if progress is not None:
            progress(partition)
    return found
