"""Demo data: the original service's demo user and a handful of slots; bench users."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import engine
from sync import catalog
from sync.db import Pool
from sync.restore import ensure_partitions

from .settings import Settings
from .users import UserExists, create_user

__all__ = [
    "BENCH_PASSWORD",
    "DEMO_EMAIL",
    "DEMO_PASSWORD",
    "bench_email",
    "seed_bench_users",
    "seed_demo",
]

DEMO_EMAIL = "example@mail.ru"
DEMO_PASSWORD = "passw0rd!"
DEMO_ADMIN = ("admin@example.com", "admin-passw0rd!")
_DEMO_SLOTS = 5
# `seed --bench-users N`: bench-user-1@example.com ... bench-user-N@example.com, one
# password for all (bench/locustfile.py logs each locust user in as another one), and
# bench slots with room for a sale that lasts (ids clear of the demo slots).
BENCH_PASSWORD = "bench-passw0rd!"
BENCH_SLOTS = range(1001, 1021)
_BENCH_CAPACITY = 100_000


def bench_email(n: int) -> str:
    return f"bench-user-{n}@example.com"


async def seed_demo(settings: Settings) -> list[str]:
    """Create what is missing; leave what exists alone."""
    report = []
    sync = settings.sync_settings()
    pool = await sync.create_pool(size=2)
    redis = sync.connect_redis()
    try:
        for email, password, role in (
            (DEMO_EMAIL, DEMO_PASSWORD, "user"),
            (*DEMO_ADMIN, "admin"),
        ):
            try:
                await create_user(pool, email, password, role=role)
                report.append(f"user {email} / {password} ({role})")
            except UserExists:
                report.append(f"user {email} exists")
        eng = engine.Engine(redis, settings.engine_settings())
        await ensure_partitions(eng, redis, pool)
        day = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)
        for n in range(1, _DEMO_SLOTS + 1):
            starts = day + timedelta(days=1, hours=n)
            if await _create_slot(pool, eng, n, 10, f"Gate A, window {n}", starts):
                report.append(f"slot {n} (capacity 10)")
    finally:
        await redis.aclose()
        await pool.close()
    return report


async def _create_slot(
    pool: Pool, eng: engine.Engine, slot_id: int, capacity: int, label: str, starts: datetime
) -> bool:
    """In PostgreSQL and Redis (sync.catalog), unless it exists; whether it was created."""
    fields = {
        "slot_id": slot_id,
        "capacity": capacity,
        "label": label,
        "starts_at": starts,
        "ends_at": starts + timedelta(hours=1),
    }
    try:
        await catalog.create_slot(eng, pool, fields)
    except engine.SlotExists:
        return False
    return True


async def seed_bench_users(settings: Settings, count: int) -> list[str]:
    """bench users 1..count and the bench slots; what exists is left alone."""
    sync = settings.sync_settings()
    pool = await sync.create_pool(size=2)
    redis = sync.connect_redis()
    created = 0
    try:
        for n in range(1, count + 1):
            try:
                await create_user(pool, bench_email(n), BENCH_PASSWORD)
                created += 1
            except UserExists:
                pass
        eng = engine.Engine(redis, settings.engine_settings())
        await ensure_partitions(eng, redis, pool)
        day = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)
        slots = 0
        for n, slot_id in enumerate(BENCH_SLOTS):
            starts = day + timedelta(days=2, hours=n)
            label = f"Bench hall, window {n + 1}"
            slots += await _create_slot(pool, eng, slot_id, _BENCH_CAPACITY, label, starts)
    finally:
        await redis.aclose()
        await pool.close()
    return [
        f"bench users {bench_email(1)} .. {bench_email(count)} / {BENCH_PASSWORD}"
        f" ({created} new, {count - created} existed)",
        f"bench slots {BENCH_SLOTS[0]}..{BENCH_SLOTS[-1]} (capacity {_BENCH_CAPACITY};"
        f" {slots} new)",
    ]
