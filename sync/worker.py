"""The arq worker: `slotkeeper worker`.

The drain runs as a loop started in on_startup (it must not wait a second
between batches); the sweep, partition rebuilds and drift checks are arq cron
jobs with unique=True, so several workers never run the same one at once (and
each also takes a Redis lock, in case one run overlaps the next). Job payloads
are JSON, never pickle.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from arq import cron
from arq.worker import Worker

from api.context import connect_redis
from api.db import create_pool
from api.sentinel import arq_redis_settings
from api.settings import Settings
from engine import Engine

from .service import SyncService

__all__ = ["build_worker"]

log = logging.getLogger("slotkeeper.sync")


async def _startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    redis = connect_redis(settings.redis_url, settings)
    pool = await create_pool(settings.database_url, size=settings.database_pool_size, timeout_s=10)
    engine = Engine(redis, settings.engine_settings())
    service = SyncService(engine, redis, pool, claim_idle_ms=settings.sync_claim_idle_ms)
    ctx.update(redis_client=redis, pool=pool, service=service)
    service.start(periodic=False)
    log.info("sync worker %s started", service.consumer)


async def _shutdown(ctx: dict[str, Any]) -> None:
    service: SyncService | None = ctx.get("service")
    if service is not None:
        await service.stop()
        await ctx["pool"].close()
        await ctx["redis_client"].aclose()


async def sweep_expired(ctx: dict[str, Any]) -> int | None:
    service: SyncService = ctx["service"]
    return await service.sweep()


async def restore_lost_partitions(ctx: dict[str, Any]) -> list[int]:
    service: SyncService = ctx["service"]
    return await service.restore()


async def check_drift(ctx: dict[str, Any]) -> int:
    service: SyncService = ctx["service"]
    return sum(map(len, (await service.check_drift()).values()))


def _json(value: Any) -> bytes:
    return orjson.dumps(value, default=str)


def build_worker(settings: Settings, *, burst: bool = False) -> Worker:
    every_second = set(range(60))
    # Cron job ids are global in arq; the prefix keeps deployments sharing a Redis apart.
    prefix = settings.key_prefix
    return Worker(
        functions=[],
        cron_jobs=[
            cron(sweep_expired, name=f"{prefix}sweep", second=every_second, run_at_startup=True),
            cron(
                restore_lost_partitions,
                name=f"{prefix}restore",
                second=every_second,
                run_at_startup=True,
            ),
            cron(check_drift, name=f"{prefix}drift", second={0, 30}),
        ],
        redis_settings=arq_redis_settings(settings),
        queue_name=f"{settings.key_prefix}arq:queue",
        on_startup=_startup,
        on_shutdown=_shutdown,
        ctx={"settings": settings},
        burst=burst,
        poll_delay=0.1,
        keep_result=0,
        job_serializer=_json,
        job_deserializer=orjson.loads,
        handle_signals=True,
    )
