"""AvailabilityCache.get must not spin on a finished rebuild whose callbacks are pending.

Found by the locust sale (issue 11): a reader arriving after a rebuild finished but
before its done-callback ran, with the copy invalidated meanwhile, awaited the
finished future again and again without yielding; the event loop hung at 100 % CPU.
"""

from __future__ import annotations

import asyncio

import pytest

from api.availability import AvailabilityCache
from engine import Slot


@pytest.mark.timeout(10)
async def test_a_reader_after_a_finished_stale_rebuild_gets_a_fresh_one() -> None:
    loads = 0

    async def load() -> list[Slot]:
        nonlocal loads
        loads += 1
        return []

    cache = AvailabilityCache(load, max_age_s=10)
    stale = await cache._build()  # generation 0
    finished: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    finished.set_result(stale)
    cache._inflight = finished  # type: ignore[assignment]  # done, callback not yet run
    cache.invalidate()  # a hold changed things: generation 1
    snap = await cache.get()
    assert snap.generation == 1
    assert loads == 2
