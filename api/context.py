"""Everything a request needs, built once in the app's lifespan."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from engine import Engine
from engine.client import RedisClient
from sync.db import Pool, create_pool
from sync.service import SyncService

from .auth import TokenService
from .availability import AvailabilityCache
from .hashing import BoundedHasher
from .metrics import Metrics
from .ratelimit import FixedWindow
from .settings import Settings

__all__ = ["AppContext", "connect_redis"]


def connect_redis(url: str, settings: Settings) -> RedisClient:
    """A client for ``url`` with the deployment's pool size and timeouts."""
    return settings.sync_settings().connect_redis(url)


@dataclass
class AppContext:
    settings: Settings
    redis: RedisClient
    read_redis: RedisClient
    pool: Pool
    engine: Engine
    tokens: TokenService
    cache: AvailabilityCache
    metrics: Metrics
    hold_rate: FixedWindow
    login_by_account: FixedWindow
    login_by_address: FixedWindow
    sync: SyncService | None = None  # when the worker runs in-process
    password_hasher: BoundedHasher | None = None  # made on first login if not built
    _owned: list[RedisClient] = field(default_factory=list)

    @classmethod
    async def build(cls, settings: Settings) -> AppContext:
        settings.check_secret()
        redis = connect_redis(settings.redis_url, settings)
        read_redis = (
            connect_redis(settings.redis_read_url, settings) if settings.redis_read_url else redis
        )
        pool = await create_pool(
            settings.database_url,
            size=settings.database_pool_size,
            timeout_s=settings.backend_timeout_s,
        )
        engine = Engine(redis, settings.engine_settings(), read_redis=read_redis)
        prefix = settings.key_prefix
        ctx = cls(
            settings=settings,
            redis=redis,
            read_redis=read_redis,
            pool=pool,
            engine=engine,
            tokens=TokenService(
                secret=settings.jwt_secret,
                algorithm=settings.jwt_algorithm,
                ttl_s=settings.access_token_ttl_s,
                refresh_window_s=settings.refresh_window_s,
                redis=redis,
                key_prefix=prefix,
                mirror_revocations=not settings.redis_cluster,
                revocation_pool=pool,
            ),
            cache=AvailabilityCache(engine.availability, settings.availability_cache_ms / 1000),
            metrics=Metrics(),
            hold_rate=FixedWindow(redis, prefix, "hold", settings.hold_rate_per_minute, 60),
            login_by_account=FixedWindow(
                redis,
                prefix,
                "login-account",
                settings.login_max_failures_per_account,
                settings.login_failure_window_s,
            ),
            login_by_address=FixedWindow(
                redis,
                prefix,
                "login-address",
                settings.login_max_failures_per_address,
                settings.login_failure_window_s,
            ),
        )
        ctx.password_hasher = BoundedHasher(
            concurrency=settings.password_hash_concurrency, budget_s=settings.login_timeout_s
        )
        ctx._owned = [c for c in {id(redis): redis, id(read_redis): read_redis}.values()]
        with contextlib.suppress(Exception):  # Redis may be down at start; readyz says so
            await engine.load_scripts()
        ctx.cache.start()
        ctx.tokens.denylist.start()
        if settings.with_worker:
            ctx.sync = SyncService(
                engine,
                redis,
                pool,
                claim_idle_ms=settings.sync_claim_idle_ms,
                webhooks=settings.webhook_settings(),
                archive_after_s=settings.slot_archive_after_s,
            )
            ctx.sync.start()
        return ctx

    async def close(self) -> None:
        if self.sync is not None:
            await self.sync.stop()
        await self.cache.stop()
        await self.tokens.denylist.stop()
        if self.password_hasher is not None:
            self.password_hasher.close()
        await self.pool.close()
        for client in self._owned:
            await client.aclose()
