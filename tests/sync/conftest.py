"""Sync fixtures: a fresh database and key prefix per test (shared servers), private
Redis servers for the drills, and an engine + pool pair to drive the sync code."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from engine import Engine
from sync.db import create_pool

from ..api.conftest import database, make_harness, make_settings, template_db
from ..conftest import _drop_prefix
from ..servers import PrivateRedis
from .helpers import SyncEnv, build_partitions
from .pgserver import PostgresServer, postgres_server

__all__ = ["database", "make_harness", "template_db"]  # fixtures shared with tests/api

SyncEnvFactory = Callable[..., Awaitable[SyncEnv]]


@pytest.fixture
def private_redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own, stopped by PID afterwards."""
    with PrivateRedis(tmp_path / "redis") as server:
        yield server.url


@pytest.fixture
async def make_env(database: str) -> AsyncIterator[SyncEnvFactory]:
    """Builds SyncEnvs on this test's database, each under a fresh key prefix with
    every partition built; ``redis_url=`` points one at a private server."""
    built: list[SyncEnv] = []

    async def factory(**overrides: Any) -> SyncEnv:
        settings = make_settings(
            database, **{"key_prefix": f"s{uuid.uuid4().hex[:10]}:", **overrides}
        )
        redis = aioredis.Redis.from_url(settings.redis_url, max_connections=256)
        pool = await create_pool(settings.database_url, size=8, timeout_s=10)
        env = SyncEnv(settings, Engine(redis, settings.engine_settings()), redis, pool)
        built.append(env)
        await build_partitions(env.engine)
        return env

    yield factory
    for env in built:
        # A private server may already be gone with its test; only the shared one matters.
        with contextlib.suppress(RedisConnectionError):
            await _drop_prefix(env.redis, env.settings.key_prefix)
        await env.redis.aclose()
        await env.pool.close()


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, which the test may stop and start."""
    with postgres_server() as server:
        yield server
