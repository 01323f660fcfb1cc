"""Revoked token ids: PostgreSQL records them, Redis and every process mirror them.

Checking a store on every request would cost a round trip per request. Instead a
revocation is recorded in PostgreSQL (table revoked_tokens; a token is revoked
once: the first insert wins), then written to Redis (SET with a TTL) and
published; every process subscribes, loads the whole list (PostgreSQL's and
Redis's) when it (re)connects, and answers ``is_revoked`` from memory. Until a
process has synchronised (Redis down at start, a cluster without pub/sub) it
asks Redis, then PostgreSQL, each time, so correctness never depends on the
mirror, and Redis losing its data never makes a revoked token work again.

Without a pool (tests of the mirror alone) Redis is the record (SET NX).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from .revoked_tokens import is_recorded, record_revocation, recorded_revocations
from .tasks import cancel_and_wait

__all__ = ["Denylist"]

log = logging.getLogger("slotkeeper.auth")
_RETRY_S = 1.0
_POLL_S = 0.5


class Denylist:
    def __init__(self, redis: Any, prefix: str, *, mirror: bool = True, pool: Any = None) -> None:
        self._redis = redis
        self._pool = pool
        self._key_prefix = f"{prefix}auth:revoked:"
        self._channel = f"{prefix}auth:revocations"
        self._local: dict[str, float] = {}  # jti -> wall-clock expiry
        self._mirror = mirror
        self.synced = False
        self._task: asyncio.Task[None] | None = None

    async def revoke(self, jti: str, ttl_s: int) -> bool:
        """Deny ``jti`` for ``ttl_s``; False if it already was (revoke happens once)."""
        if self._pool is None:
            first = await self._redis.set(self._key_prefix + jti, "1", nx=True, ex=ttl_s)
        else:
            first = await record_revocation(self._pool, jti, ttl_s)
            if first:
                await self._redis.set(self._key_prefix + jti, "1", ex=ttl_s)
        if first:
            self._local[jti] = time.time() + ttl_s
            with contextlib.suppress(Exception):  # others catch up on their next sync
                await self._redis.publish(self._channel, f"{jti} {ttl_s}")
        return bool(first)

    async def is_revoked(self, jti: str) -> bool:
        if not self.synced:
            if await self._redis.exists(self._key_prefix + jti):
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
        local: dict[str, float] = {}
        keys = [k async for k in self._redis.scan_iter(match=self._key_prefix + "*", count=1000)]
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.pttl(key)
                ttls = await pipe.execute()
            for key, ttl_ms in zip(chunk, ttls, strict=True):
                name = key.decode() if isinstance(key, bytes) else key
                if ttl_ms and ttl_ms > 0:
                    local[name.removeprefix(self._key_prefix)] = now + ttl_ms / 1000
        if self._pool is not None:
            recorded = await recorded_revocations(self._pool)
            missing = {jti: at for jti, at in recorded.items() if jti not in local}
            await self._restore_mirror(missing, now)
            local.update(recorded)
        self._local = {**local, **self._local}

    async def _restore_mirror(self, missing: dict[str, float], now: float) -> None:
        """Put back into Redis what it lost (a flush, a failover), for the
        processes that ask it."""
        if not missing:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for jti, expires_at in missing.items():
                pipe.set(self._key_prefix + jti, "1", ex=max(1, int(expires_at - now)))
            await pipe.execute()
        log.warning("revocation mirror: %s revoked tokens put back into Redis", len(missing))
