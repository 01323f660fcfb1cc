"""The sync service: drain loop, expiry sweep, partition rebuilds, drift checks.

Used by the arq worker (sync/worker.py) and in-process by `slotkeeper serve
--with-worker`. Periodic work takes a Redis lock, so however many processes run
it, one sweep (or rebuild, or drift check) runs at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

from engine import Engine, EngineError, StateUnavailable
from engine.client import RedisClient
from engine.tasks import cancel_and_wait

from .archive import ArchiveStats, archive_finished
from .db import Pool
from .drain import drain_partition, sync_lag_ms
from .reconcile import check_partition
from .restore import ensure_partitions
from .sequence import fail_rewound_partitions
from .webhooks import WebhookDispatcher, WebhookSettings

__all__ = ["DRIFT_GAUGE", "EXPIRED_COUNTER", "SyncService", "read_counters"]

# Holds expired by sweeps, all workers; read by the API's /metrics.
EXPIRED_COUNTER = "expired_total"
# Differences the last drift check found, all partitions; read by /metrics too.
DRIFT_GAUGE = "drift"

log = logging.getLogger("slotkeeper.sync")

_IDLE_SLEEP_S = 0.01
_MAX_IDLE_SLEEP_S = 0.2
_ERROR_SLEEP_S = 0.5
# Slots are archived a day (by default) after they end: once a minute is plenty.
_ARCHIVE_PERIOD_S = 60.0


async def read_counters(engine: Engine, redis: RedisClient) -> tuple[int, int]:
    """(holds expired by sweeps, differences the last drift check found): all workers'."""
    keys = engine.keys
    expired, drift = await redis.mget(keys.counter(EXPIRED_COUNTER), keys.counter(DRIFT_GAUGE))
    return int(expired or 0), int(drift or 0)


class SyncService:
    def __init__(
        self,
        engine: Engine,
        redis: RedisClient,
        pool: Pool,
        *,
        consumer: str | None = None,
        batch: int = 500,
        claim_idle_ms: int = 30_000,
        webhooks: WebhookSettings | None = None,
        archive_after_s: int = 86_400,
    ) -> None:
        self.engine = engine
        self.redis = redis
        self.pool = pool
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self.archive_after_s = archive_after_s
        self.expired_total = 0
        self.written_total = 0
        self.last_drift: dict[int, list[str]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.webhooks = WebhookDispatcher(pool, webhooks)

    # -- one round of each duty -------------------------------------------------

    async def drain_round(self) -> int:
        """One batch from every partition; entries written."""
        written = 0
        failure: Exception | None = None
        for partition in range(self.engine.settings.partitions):
            try:
                stats = await drain_partition(
                    self.engine,
                    self.redis,
                    self.pool,
                    partition,
                    consumer=self.consumer,
                    batch=self.batch,
                    claim_idle_ms=self.claim_idle_ms,
                )
            except Exception as exc:  # one partition's trouble must not stall the others
                failure = exc
                continue
            written += stats.written + stats.rejected
        self.written_total += written
        if failure is not None and not written:
            raise failure
        return written

    async def sweep(self) -> int | None:
        """Expire every due hold of every partition; None if another process is sweeping."""
        lock = self.redis.lock(self.engine.keys.lock("sweep"), timeout=30, blocking=False)
        if not await lock.acquire():
            return None
        expired = 0
        try:
            for partition in range(self.engine.settings.partitions):
                with contextlib.suppress(StateUnavailable):  # rebuilt by restore()
                    more = True
                    while more:  # each call takes at least one due entry
                        count, more = await self.engine.sweep(partition)
                        expired += count
                    # Groups a dead process left half-way (engine/groups.py).
                    await self.engine.groups.sweep(partition)
        finally:
            with contextlib.suppress(Exception):
                await lock.release()
        self.expired_total += expired
        if expired:
            await self.redis.incrby(self.engine.keys.counter(EXPIRED_COUNTER), expired)
        return expired

    async def archive(self, *, now_ms: int | None = None) -> ArchiveStats | None:
        """Take slots that are over out of Redis (sync/archive.py); None if another
        process is archiving."""
        lock = self.redis.lock(self.engine.keys.lock("archive"), timeout=300, blocking=False)
        if not await lock.acquire():
            return None
        try:
            stats = await archive_finished(
                self.engine, self.redis, self.pool, after_s=self.archive_after_s, now_ms=now_ms
            )
        finally:
            with contextlib.suppress(Exception):
                await lock.release()
        if stats.archived:
            log.info("archived %s slots (%s holds)", stats.archived, stats.holds)
        return stats

    async def restore(self) -> list[int]:
        def done(partition: int, holds: int) -> None:
            log.warning("rebuilt partition %s from postgres (%s holds)", partition, holds)

        # A partition that went back in time is failed closed first, then rebuilt.
        await fail_rewound_partitions(self.engine, self.redis, self.pool)
        return await ensure_partitions(self.engine, self.redis, self.pool, on_restored=done)

    async def check_drift(self) -> dict[int, list[str]]:
        """Compare without draining first: some drift may be lag; it is logged, not fixed."""
        lock = self.redis.lock(self.engine.keys.lock("drift"), timeout=120, blocking=False)
        if not await lock.acquire():
            return self.last_drift
        try:
            found = {}
            for partition in range(self.engine.settings.partitions):
                with contextlib.suppress(StateUnavailable):
                    drift = await check_partition(self.engine, self.pool, partition)
                    if not drift.clean:
                        found[partition] = drift.problems
            for partition, problems in found.items():
                log.warning("drift in partition %s: %s", partition, "; ".join(problems[:5]))
            self.last_drift = found
            await self.redis.set(
                self.engine.keys.counter(DRIFT_GAUGE), sum(map(len, found.values()))
            )
            return found
        finally:
            with contextlib.suppress(Exception):
                await lock.release()

    async def lag_ms(self) -> int:
        return await sync_lag_ms(self.engine, self.redis)

    # -- loops (in-process mode) ------------------------------------------------

    async def _drain_forever(self) -> None:
        idle_s = _IDLE_SLEEP_S
        while True:
            try:
                if await self.drain_round():
                    idle_s = _IDLE_SLEEP_S
                else:
                    # Nothing to write: poll less and less often, up to a bound,
                    # so an idle deployment does not keep Redis busy.
                    await asyncio.sleep(idle_s)
                    idle_s = min(idle_s * 2, _MAX_IDLE_SLEEP_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis or PostgreSQL away: retry, never die
                log.warning("drain failed: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(_ERROR_SLEEP_S)

    async def _every(self, period_s: float, duty: Any, *, first_after_s: float = 0.0) -> None:
        await asyncio.sleep(first_after_s)
        while True:
            try:
                await duty()
            except asyncio.CancelledError:
                raise
            except (EngineError, Exception) as exc:
                log.warning("%s failed: %s: %s", duty.__name__, type(exc).__name__, exc)
            await asyncio.sleep(period_s)

    def start(self, *, periodic: bool = True, drift_period_s: float = 30.0) -> None:
        """Run the drain loop (and, with ``periodic``, sweep/restore/drift) as tasks."""
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._drain_forever()))
        self._tasks.append(loop.create_task(self.webhooks.run()))  # beside, never in, the drain
        if periodic:
            self._tasks.append(loop.create_task(self._every(1.0, self.sweep)))
            self._tasks.append(loop.create_task(self._every(1.0, self.restore)))
            self._tasks.append(loop.create_task(self._every(_ARCHIVE_PERIOD_S, self.archive)))
            # The first check waits a period: right after start the drain is
            # still catching up, and lag would be reported as drift.
            self._tasks.append(
                loop.create_task(
                    self._every(drift_period_s, self.check_drift, first_after_s=drift_period_s)
                )
            )

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)
        await self.webhooks.close()
