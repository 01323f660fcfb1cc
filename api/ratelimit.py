"""Fixed-window counters in Redis, shared by every API process."""

from __future__ import annotations

import time
from collections import Counter

from engine import KeySchema
from engine.client import RedisClient

__all__ = ["FixedWindow"]


class FixedWindow:
    """Counts events per name in windows of ``window_s``; no capacity decision rides on it."""

    def __init__(
        self, redis: RedisClient, prefix: str, name: str, limit: int, window_s: int
    ) -> None:
        self._redis = redis
        self._keys = KeySchema(prefix)
        self._name = name
        self.limit = limit
        self.window_s = window_s

    def _key(self, subject: str) -> tuple[str, int]:
        now = time.time()
        window = int(now // self.window_s)
        retry_after = max(1, int((window + 1) * self.window_s - now + 0.999))
        return self._keys.rate_limit(self._name, window, subject), retry_after

    async def hit(self, subject: str) -> int:
        """Count one event; 0 when allowed, else seconds until the window ends."""
        key, retry_after = self._key(subject)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.window_s + 1, nx=True)
            count, _ = await pipe.execute()
        return 0 if count <= self.limit else retry_after

    async def hit_many(self, subjects: list[str]) -> list[int]:
        """``hit`` for each subject in turn, in one round trip (one INCRBY per
        distinct subject); a subject may repeat, its later events count after
        its earlier ones."""
        counts = Counter(subjects)
        keys = {subject: self._key(subject) for subject in counts}
        async with self._redis.pipeline(transaction=False) as pipe:
            for subject, (key, _) in keys.items():
                pipe.incrby(key, counts[subject])
                pipe.expire(key, self.window_s + 1, nx=True)
            replies = await pipe.execute()
        # The count before this call's events, per subject; then one more per event.
        seen = {s: int(total) - counts[s] for s, total in zip(keys, replies[::2], strict=True)}
        waits = []
        for subject in subjects:
            seen[subject] += 1
            waits.append(0 if seen[subject] <= self.limit else keys[subject][1])
        return waits

    async def blocked(self, subject: str) -> int:
        """Seconds until allowed again (0 = not blocked), without counting."""
        key, retry_after = self._key(subject)
        count = await self._redis.get(key)
        return retry_after if count is not None and int(count) >= self.limit else 0

    async def clear(self, subject: str) -> None:
        key, _ = self._key(subject)
        await self._redis.delete(key)
