"""Revoked token ids: PostgreSQL records them, Redis and every process mirror them.

Checking a store on every request would cost a round trip per request. Instead a
revocation is recorded in PostgreSQL (sync/revocations.py; a token is revoked
once: the first insert wins), then written to Redis (one sorted set, scored by
expiry; expired ids are trimmed on each write) and published; every process
subscribes, loads the whole list (PostgreSQL's and Redis's) when it
(re)connects, and answers ``is_revoked`` from memory. Until a process has
synchronised (Redis down at start, a cluster without pub/sub) it asks Redis,
then PostgreSQL, each time, so correctness never depends on the mirror, and
Redis losing its data never makes a revoked token work again.

Without a pool (tests of the mirror alone) Redis is the record (ZADD NX).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis

from engine import KeySchema
from engine.client import RedisClient
from engine.tasks import cancel_and_wait
from sync.db import Pool
from sync.revocations import is_recorded, record_revocation, recorded_revocations

__all__ = ["Denylist"]

log = logging.getLogger("slotkeeper.auth")
_RETRY_S = 1.0
_POLL_S = 0.5


class Denylist:
    def __init__(
        self, redis: RedisClient, prefix: str, *, mirror: bool = True, pool: Pool | None = None
    ) -> None:
        self._redis = redis
        self._pool = pool
        keys = KeySchema(prefix)  # only keys outside the partitions
        self._key = keys.revoked()
        self._channel = keys.revocations_channel()
        self._local: dict[str, float] = {}  # jti -> wall-clock expiry
        self._mirror = mirror
        self.synced = False
        self._task: asyncio.Task[None] | None = None

    async def revoke(self, jti: str, ttl_s: int) -> bool:
        """Deny ``jti`` for ``ttl_s``; False if it already was (revoke happens once)."""
        now = time.time()
        if self._pool is None:
            first = await self._mirror_add({jti: now + ttl_s}, now, nx=True)
        else:
            first = await record_revocation(self._pool, jti, ttl_s)
            if first:
                await self._mirror_add({jti: now + ttl_s}, now)
        if first:
            self._local[jti] = now + ttl_s
            # redis-py's cluster client has no pub/sub: there every process asks Redis.
            if isinstance(self._redis, aioredis.Redis):
                with contextlib.suppress(Exception):  # others catch up on their next sync
                    await self._redis.publish(self._channel, f"{jti} {ttl_s}")
        return bool(first)

    async def _mirror_add(
        self, expiries: dict[str, float], now: float, *, nx: bool = False
    ) -> bool:
        # One key, so one node even on a cluster; no MULTI needed: ZADD NX alone
        # decides who revoked first, the trim only drops ids that have expired.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(self._key, "-inf", now)
            pipe.zadd(self._key, expiries, nx=nx)
            _, added = await pipe.execute()
        return bool(added)

    async def is_revoked(self, jti: str) -> bool:
        if not self.synced:
            expiry = await self._redis.zscore(self._key, jti)
            if expiry is not None and expiry > time.time():
                return True
            return self._pool is not None and await is_recorded(self._pool, jti)
        expiry = self._local.get(jti)
        if expiry is None:
            return False
        if expiry < time.time():
            self._local.pop(jti, None)
            return False
        return True

    def start(self) -> None:
        if self._mirror:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])

    async def _follow(self) -> None:
        if not isinstance(self._redis, aioredis.Redis):
            return
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel)
                    # Subscribed first, then loaded: a revocation made in between
                    # arrives as a message, so none is missed.
                    await self._load()
                    self.synced = True
                    while True:
                        # A bounded wait, not listen(): a quiet channel must not
                        # look like a dead connection to the socket timeout.
                        message = await pubsub.get_message(timeout=_POLL_S)
                        if message is not None:
                            self._apply(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: fall back to asking it each time
                if self.synced:
                    log.warning("revocation mirror lost Redis: %s", type(exc).__name__)
                self.synced = False
                await asyncio.sleep(_RETRY_S)

    def _apply(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        jti, _, ttl = text.partition(" ")
        if jti and ttl.isdigit():
            self._local[jti] = time.time() + int(ttl)

    async def _load(self) -> None:
        now = time.time()
        found = await self._redis.zrangebyscore(self._key, now, "+inf", withscores=True)
        local = {(j.decode() if isinstance(j, bytes) else j): float(e) for j, e in found}
        if self._pool is not None:
            recorded = await recorded_revocations(self._pool)
            missing = {jti: at for jti, at in recorded.items() if jti not in local}
            if missing:
                # Put back into Redis what it lost (a flush, a failover), for the
                # processes that ask it.
                await self._mirror_add(missing, now)
                log.warning("revocation mirror: %s revoked tokens put back", len(missing))
            local.update(recorded)
        self._local = {**local, **self._local}
