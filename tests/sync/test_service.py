"""SyncService lifecycle."""

from __future__ import annotations

import asyncio

from sync.service import SyncService

from .conftest import SyncEnvFactory


async def test_stop_ends_every_loop_even_if_a_cancellation_is_swallowed(
    make_env: SyncEnvFactory,
) -> None:
    """redis-py can swallow a cancellation (asyncio.timeout(0) in its hiredis parser,
    cpython#134471); stop() must still end the loops instead of leaving them running."""
    env = await make_env()
    service = SyncService(env.engine, env.redis, env.pool, consumer="w")
    swallowed = asyncio.Event()

    async def drain_round_that_swallows() -> int:
        if swallowed.is_set():
            await asyncio.sleep(0.05)
            return 0
        # The first round waits for the cancellation (wherever the event loop's load
        # puts it in time) and swallows it; later rounds behave.
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            swallowed.set()  # as the library does: the cancellation is gone
        return 0

    service.drain_round = drain_round_that_swallows  # type: ignore[method-assign]
    service.start()
    tasks = list(service._tasks)
    await asyncio.sleep(0.1)
    stopping = asyncio.create_task(service.stop())
    done, _ = await asyncio.wait([stopping], timeout=5)
    assert stopping in done, "stop() is still waiting for a loop that ignored its cancellation"
    assert swallowed.is_set()
    assert all(task.done() for task in tasks)
