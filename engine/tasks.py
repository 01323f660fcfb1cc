"""Stopping background tasks reliably."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

__all__ = ["cancel_and_wait"]

log = logging.getLogger("slotkeeper")


async def cancel_and_wait(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel until done, not once: a cancellation that lands inside redis-py's
    asyncio.timeout(0) (hiredis' can_read_destructive) can be swallowed
    (cpython#134471), and a loop task would then run on forever."""
    tasks = list(tasks)
    while pending := [task for task in tasks if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task ended with %r", task.exception())
