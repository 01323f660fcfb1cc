"""Layered fixtures: a server per session, a clean key prefix per test.

Backends for engine tests:
- ``fake``: fakeredis with Lua, for fast rule checks;
- ``redis``: the real Redis at SLOTKEEPER_TEST_REDIS_URL (default 127.0.0.1:6379/0),
  each test under its own key prefix, removed afterwards (never FLUSHALL);
- ``cluster``: a private 3-master Redis Cluster this session starts and stops.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from engine import Engine, EngineSettings

from .servers import redis_cluster

EngineFactory = Callable[..., Awaitable[Engine]]

BACKENDS = ["fake", "redis", "cluster"]


def redis_url() -> str:
    return os.environ["SLOTKEEPER_TEST_REDIS_URL"]


_embedded: contextlib.ExitStack | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Without SLOTKEEPER_TEST_*_URL, the session starts embedded servers of its own."""
    global _embedded
    config.addinivalue_line("markers", "backends(*names): run on these Redis backends")
    want_redis = "SLOTKEEPER_TEST_REDIS_URL" not in os.environ
    want_postgres = "SLOTKEEPER_TEST_DATABASE_URL" not in os.environ
    if not (want_redis or want_postgres) or hasattr(config, "workerinput"):
        return
    from api.embedded import EmbeddedServers

    folder = Path(tempfile.mkdtemp(prefix="slotkeeper-test-"))
    servers = EmbeddedServers(folder)
    _embedded = contextlib.ExitStack()
    _embedded.callback(shutil.rmtree, folder, ignore_errors=True)
    _embedded.enter_context(servers.running(redis=want_redis, postgres=want_postgres))
    if want_redis:
        os.environ["SLOTKEEPER_TEST_REDIS_URL"] = servers.redis_url
    if want_postgres:
        os.environ["SLOTKEEPER_TEST_DATABASE_URL"] = servers.database_url


def pytest_unconfigure(config: pytest.Config) -> None:
    if _embedded is not None:
        _embedded.close()


@pytest.fixture(scope="session")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    with redis_cluster(Path(tmp_path_factory.mktemp("cluster"))) as ports:
        yield ports


@pytest.fixture
async def real_redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url(), max_connections=64)
    yield client
    await client.aclose()


async def _drop_prefix(client: Any, prefix: str) -> None:
    batch: list[Any] = []
    async for key in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            await client.delete(*batch)
            batch.clear()
    if batch:
        await client.delete(*batch)


@pytest.fixture
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, Any]]:
    """(backend name, client) for the backend the test is parametrised with."""
    backend = getattr(request, "param", "redis")
    if backend == "fake":
        client: Any = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        yield backend, client
        await client.aclose()
    elif backend == "redis":
        client = aioredis.Redis.from_url(redis_url(), max_connections=64)
        yield backend, client
        await client.aclose()
    else:
        ports = request.getfixturevalue("cluster_ports")
        client = RedisCluster(host="127.0.0.1", port=ports[0], max_connections=64)
        yield backend, client
        await client.aclose()


@pytest.fixture
async def make_engine(redis_client: tuple[str, Any]) -> AsyncIterator[EngineFactory]:
    """Builds engines under a fresh key prefix, every partition built (empty)."""
    backend, client = redis_client
    prefixes: list[str] = []

    async def factory(**overrides: Any) -> Engine:
        prefix = f"t{uuid.uuid4().hex[:10]}:"
        prefixes.append(prefix)
        settings = EngineSettings(**{"partitions": 4, "key_prefix": prefix, **overrides})
        engine = Engine(client, settings)
        for p in range(settings.partitions):
            await engine.load_partition(p, [], [], epoch="test")
        return engine

    yield factory
    # The fake server and the private cluster die with the test session; only
    # the shared Redis needs its keys taken back.
    if backend == "redis":
        for prefix in prefixes:
            await _drop_prefix(client, prefix)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``backends`` run on each named backend (default: all three)."""
    marker = metafunc.definition.get_closest_marker("backends")
    if marker is not None and "redis_client" in metafunc.fixturenames:
        names = list(marker.args) or BACKENDS
        metafunc.parametrize("redis_client", names, indirect=True, ids=names)
