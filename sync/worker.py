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
from arq.connections import RedisSettings
from arq.worker import Worker

from engine import Engine, KeySchema
from engine.sentinel import url_options

from .service import SyncService
from .settings import SyncSettings

__all__ = ["build_worker"]

log = logging.getLogger("slotkeeper.sync")


async def _startup(ctx: dict[str, Any]) -> None:
    settings: SyncSettings = ctx["settings"]
    redis = settings.connect_redis()
    pool = await settings.create_pool()
    engine = Engine(redis, settings.engine)
    service = SyncService(
        engine,
        redis,
        pool,
        claim_idle_ms=settings.claim_idle_ms,
        webhooks=settings.webhooks,
        archive_after_s=settings.slot_archive_after_s,
    )
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


async def archive_finished(ctx: dict[str, Any]) -> int | None:
    service: SyncService = ctx["service"]
    stats = await service.archive()
    return None if stats is None else stats.archived


async def check_drift(ctx: dict[str, Any]) -> int:
    service: SyncService = ctx["service"]
    return sum(map(len, (await service.check_drift()).values()))


def _json(value: Any) -> bytes:
    return orjson.dumps(value, default=str)


def arq_redis_settings(settings: SyncSettings) -> RedisSettings:
    """The arq worker's own connection: through the sentinels when they are set."""
    if not settings.redis_sentinels:
        return RedisSettings.from_dsn(settings.redis_url)
    options = url_options(settings.redis_url)
    return RedisSettings(
        host=list(settings.redis_sentinels),
        sentinel=True,
        sentinel_master=settings.redis_sentinel_master,
        database=options.get("db", 0),
        username=options.get("username"),
        password=options.get("password"),
    )


def build_worker(settings: SyncSettings, *, burst: bool = False) -> Worker:
    every_second = set(range(60))
    keys = KeySchema(settings.engine.key_prefix, settings.engine.partitions)
    return Worker(
        functions=[],
        cron_jobs=[
            cron(
                sweep_expired, name=keys.cron_job("sweep"), second=every_second, run_at_startup=True
            ),
            cron(
                restore_lost_partitions,
                name=keys.cron_job("restore"),
                second=every_second,
                run_at_startup=True,
            ),
            cron(check_drift, name=keys.cron_job("drift"), second={0, 30}),
            cron(archive_finished, name=keys.cron_job("archive"), second={15}),
        ],
        redis_settings=arq_redis_settings(settings),
        queue_name=keys.arq_queue(),
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
