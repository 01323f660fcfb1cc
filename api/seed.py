"""Demo data: the original service's demo user and a handful of slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import engine
from sync import catalog
from sync.restore import ensure_partitions

from .settings import Settings
from .users import UserExists, create_user

__all__ = ["DEMO_EMAIL", "DEMO_PASSWORD", "seed_demo"]

DEMO_EMAIL = "example@mail.ru"
DEMO_PASSWORD = "passw0rd!"
DEMO_ADMIN = ("admin@example.com", "admin-passw0rd!")
_DEMO_SLOTS = 5


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
            fields = {
                "slot_id": n,
                "capacity": 10,
                "label": f"Gate A, window {n}",
                "starts_at": starts,
                "ends_at": starts + timedelta(hours=1),
            }
            try:
                await catalog.create_slot(eng, pool, fields)
            except engine.SlotExists:
                continue
            report.append(f"slot {n} (capacity 10)")
    finally:
        await redis.aclose()
        await pool.close()
    return report
