"""The Redis client every process uses, and its type."""

from __future__ import annotations

from typing import TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

__all__ = ["RedisClient", "connect_redis"]

RedisClient: TypeAlias = "aioredis.Redis | RedisCluster"

_CLUSTER_MIN_CONNECTIONS = 1024


def connect_redis(
    url: str, *, cluster: bool, max_connections: int, timeout_s: float
) -> RedisClient:
    """A client that never hangs. On one server it waits for a free connection;
    redis-py's cluster client has no blocking pool and fails when a node's pool is
    full, so there the pool is made generous instead."""
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
