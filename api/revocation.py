"""Revoked token ids: Redis is the truth, every process keeps a mirror.

Checking Redis on every request would cost a round trip per request. Instead a
revocation is written to Redis (SET NX with a TTL, so a token is revoked once)
and published; every process subscribes, loads the whole list when it
(re)connects, and answers ``is_revoked`` from memory. Until a process has
synchronised (Redis down at start, a cluster without pub/sub) it asks Redis
each time, so correctness never depends on the mirror.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from .tasks import cancel_and_wait

__all__ = ["Denylist"]

log = logging.getLogger("slotkeeper.auth")
_RETRY_S = 1.0
_POLL_S = 0.5


class Denylist:
    def __init__(self, redis: Any, prefix: str, *, mirror: bool = True) -> None:
        self._redis = redis
        self._key_prefix = f"{prefix}auth:revoked:"
        self._channel = f"{prefix}auth:revocations"
        self._local: dict[str, float] = {}  # jti -> wall-clock expiry
        self._mirror = mirror
        self.synced = False
        self._task: asyncio.Task[None] | None = None

    async def revoke(self, jti: str, ttl_s: int) -> bool:
        """Deny ``jti`` for ``ttl_s``; False if it already was (revoke happens once)."""
        first = await self._redis.set(self._key_prefix + jti, "1", nx=True, ex=ttl_s)
        if first:
            self._local[jti] = time.time() + ttl_s
            with contextlib.suppress(Exception):  # others catch up on their next sync
                await self._redis.publish(self._channel, f"{jti} {ttl_s}")
        return bool(first)

    async def is_revoked(self, jti: str) -> bool:
        if not self.synced:
            return bool(await self._redis.exists(self._key_prefix + jti))
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
        self._local = {**local, **self._local}
