"""Shared pieces of the sync tests: data makers, the Redis-vs-PostgreSQL check, the CLI."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.exceptions import ResponseError

from api.settings import Settings
from engine import Engine, Hold
from sync.drain import GROUP
from sync.reconcile import check_partition

__all__ = [
    "CliResult",
    "SyncEnv",
    "all_redis_holds",
    "assert_postgres_matches_redis",
    "build_partitions",
    "cli_env",
    "entries_added",
    "gather_in_chunks",
    "hold_many",
    "make_slots",
    "make_users",
    "pending_count",
    "run_cli",
    "start_worker",
    "stream_ids",
    "wait_until",
]

SLOTKEEPER = str(Path(sys.executable).with_name("slotkeeper"))


@dataclass
class SyncEnv:
    """An engine, its Redis client and a PostgreSQL pool on one fresh database."""

    settings: Settings
    engine: Engine
    redis: Any
    pool: Any


async def make_users(pool: Any, count: int) -> list[str]:
    """Users straight into PostgreSQL (no argon2: these never log in); their ids as text."""
    rows = await pool.fetch(
        "INSERT INTO users (email, password_hash)"
        " SELECT 'sync-' || g || '-' || $2 || '@example.com', 'not-a-hash'"
        " FROM generate_series(1, $1) AS g RETURNING user_id",
        count,
        uuid.uuid4().hex[:8],
    )
    return [str(r["user_id"]) for r in rows]


async def make_slots(engine: Engine, pool: Any, slot_ids: Sequence[int], capacity: int) -> None:
    """The catalog row first (as POST /slots does), then the live counters."""
    await pool.executemany(
        "INSERT INTO slots (slot_id, capacity) VALUES ($1, $2)",
        [(slot_id, capacity) for slot_id in slot_ids],
    )
    for slot_id in slot_ids:
        await engine.create_slot(slot_id, capacity)


async def build_partitions(engine: Engine) -> None:
    """Every partition built, empty (what a fresh deployment's first rebuild does)."""
    for partition in range(engine.settings.partitions):
        await engine.load_partition(partition, [], [], epoch=f"test-{uuid.uuid4().hex[:6]}")


async def gather_in_chunks(
    calls: Sequence[Callable[[], Awaitable[Any]]], size: int = 200
) -> list[Any]:
    """Run many engine calls concurrently without opening thousands of connections."""
    out: list[Any] = []
    for start in range(0, len(calls), size):
        out.extend(await asyncio.gather(*(call() for call in calls[start : start + size])))
    return out


async def hold_many(
    engine: Engine, slot_ids: Sequence[int], users: Sequence[str], count: int
) -> list[Hold]:
    """``count`` holds of one unit, spread round-robin over slots and users."""
    tag = uuid.uuid4().hex[:6]

    def call(i: int) -> Callable[[], Awaitable[Any]]:
        slot_id = slot_ids[i % len(slot_ids)]
        user = users[(i // len(slot_ids)) % len(users)]
        return lambda: engine.hold(slot_id, user, f"k-{tag}-{i}")

    outcomes = await gather_in_chunks([call(i) for i in range(count)])
    return [o.hold for o in outcomes]


async def all_redis_holds(engine: Engine) -> dict[str, Hold]:
    holds: dict[str, Hold] = {}
    for partition in range(engine.settings.partitions):
        holds.update({h.hold_id: h for h in await engine.partition_holds(partition)})
    return holds


async def assert_postgres_matches_redis(engine: Engine, pool: Any) -> int:
    """PostgreSQL has exactly Redis's holds (status, version, quantity), every event of
    every hold once (versions 1..v, no gap, no copy), and every partition reconciles.
    Returns the number of hold events."""
    redis_holds = await all_redis_holds(engine)
    rows = await pool.fetch("SELECT hold_id, status, version, quantity, user_id FROM holds")
    pg = {r["hold_id"]: (r["status"], r["version"], r["quantity"], str(r["user_id"])) for r in rows}
    want = {h.hold_id: (h.status, h.version, h.quantity, h.user_id) for h in redis_holds.values()}
    missing = sorted(set(want) - set(pg))[:5]
    extra = sorted(set(pg) - set(want))[:5]
    differ = [(k, want[k], pg[k]) for k in want if k in pg and pg[k] != want[k]][:5]
    assert not (missing or extra or differ), f"missing {missing} extra {extra} differ {differ}"

    versions = {
        r["hold_id"]: list(r["versions"])
        for r in await pool.fetch(
            "SELECT hold_id, array_agg(version ORDER BY version) AS versions"
            " FROM hold_events GROUP BY hold_id"
        )
    }
    gaps = [
        (hold_id, versions.get(hold_id))
        for hold_id, h in redis_holds.items()
        if versions.get(hold_id) != list(range(1, h.version + 1))
    ]
    assert not gaps, f"events not exactly versions 1..v: {gaps[:5]}"
    counts = await pool.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT (stream, entry_id)) AS entries,"
        " count(DISTINCT (hold_id, version)) AS versions FROM hold_events"
    )
    assert counts["n"] == counts["entries"] == counts["versions"]
    assert counts["n"] == sum(h.version for h in redis_holds.values())

    for partition in range(engine.settings.partitions):
        drift = await check_partition(engine, pool, partition)
        assert drift.clean, drift.problems
    return int(counts["n"])


async def stream_ids(engine: Engine, redis: Any, partition: int) -> list[str]:
    entries = await redis.xrange(engine.keys.events(partition))
    return [_text(entry_id) for entry_id, _ in entries]


async def pending_count(engine: Engine, redis: Any) -> dict[str, int]:
    """Unacknowledged entries by consumer, all partitions."""
    out: dict[str, int] = {}
    for partition in range(engine.settings.partitions):
        stream = engine.keys.events(partition)
        if not await redis.exists(stream):
            continue
        try:
            summary = await redis.xpending(stream, GROUP)
        except ResponseError:  # no consumer group yet: nothing delivered
            continue
        for consumer in summary.get("consumers") or []:
            name = _text(consumer["name"])
            out[name] = out.get(name, 0) + int(consumer["pending"])
    return out


async def entries_added(engine: Engine, redis: Any) -> int:
    """Entries ever appended to the partitions' streams (trimmed ones included)."""
    total = 0
    for partition in range(engine.settings.partitions):
        stream = engine.keys.events(partition)
        if await redis.exists(stream):
            total += int((await redis.xinfo_stream(stream))["entries-added"])
    return total


async def wait_until(
    probe: Callable[[], Awaitable[bool]],
    *,
    timeout_s: float,
    interval_s: float = 0.05,
    explain: Callable[[], Awaitable[Any]] | None = None,
) -> float:
    """Poll until ``probe()`` is true; returns the seconds it took. On timeout fails
    with what ``explain()`` says about the state."""
    start = time.monotonic()
    while not await probe():
        if time.monotonic() - start > timeout_s:
            state = await explain() if explain is not None else ""
            raise AssertionError(f"condition not met within {timeout_s} s {state}")
        await asyncio.sleep(interval_s)
    return time.monotonic() - start


def cli_env(settings: Settings, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a `slotkeeper` subprocess: only these SLOTKEEPER_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLOTKEEPER_")}
    env.update(
        SLOTKEEPER_REDIS_URL=settings.redis_url,
        SLOTKEEPER_DATABASE_URL=settings.database_url,
        SLOTKEEPER_KEY_PREFIX=settings.key_prefix,
        SLOTKEEPER_PARTITIONS=str(settings.partitions),
        SLOTKEEPER_JWT_SECRET=settings.jwt_secret,
        SLOTKEEPER_DATA_DIR=str(data_dir),
        SLOTKEEPER_LOG_LEVEL="WARNING",
        NO_COLOR="1",
        COLUMNS="200",
    )
    env.update(extra)
    return env


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


async def run_cli(*args: str, env: dict[str, str], timeout_s: float = 60) -> CliResult:
    proc = await asyncio.create_subprocess_exec(
        SLOTKEEPER,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(timeout_s):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


async def start_worker(env: dict[str, str], log_path: Path) -> asyncio.subprocess.Process:
    """`slotkeeper worker` as a real process, its output in ``log_path``."""
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            SLOTKEEPER, "worker", env=env, stdout=log, stderr=log
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
