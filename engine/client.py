"""The Redis client every process uses, and its type."""

from __future__ import annotations

from typing import TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from .sentinel import connect_sentinel

__all__ = ["RedisClient", "connect_redis"]

RedisClient: TypeAlias = "aioredis.Redis | RedisCluster"

_CLUSTER_MIN_CONNECTIONS = 1024


def connect_redis(
    url: str,
    *,
    cluster: bool,
    max_connections: int,
    timeout_s: float,
    sentinels: tuple[tuple[str, int], ...] = (),
    sentinel_master: str = "",
) -> RedisClient:
    """A client that never hangs. On one server it waits for a free connection;
    redis-py's cluster client has no blocking pool and fails when a node's pool is
    full, so there the pool is made generous instead. With ``sentinels``, the
    client of ``sentinel_master``'s current primary (engine/sentinel.py)."""
    if sentinels:
        return connect_sentinel(
            url,
            sentinels,
            sentinel_master,
            max_connections=max_connections,
            timeout_s=timeout_s,
        )
    if cluster:
        cluster_client: RedisCluster = RedisCluster.from_url(
            url,
            max_connections=max(max_connections, _CLUSTER_MIN_CONNECTIONS),
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        return cluster_client
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )
    return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() disconnects it
