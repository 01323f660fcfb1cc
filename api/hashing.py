"""Password hashing, a few at a time: a login storm queues instead of starving the CPU.

Argon2id with OWASP's first recommended setting (m = 19 MiB, t = 2, p = 1; RFC 9106
section 4 leaves the choice to the budget). One hash takes one core for ~22 ms on
the project's machine (docs/decisions.md). At most ``concurrency`` hashes run at
once per process, in their own threads; the rest wait in order. A caller whose
expected wait (the queue ahead of it times the measured time per hash, divided by
the concurrency) would exceed the login budget, with every thread busy, is
refused at once with
``Overloaded``, whose ``retry_after_s`` comes from the same estimate.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.low_level import Type

__all__ = ["BoundedHasher", "Overloaded", "hasher"]

# OWASP Password Storage Cheat Sheet, argon2id: m=19456 KiB, t=2, p=1.
hasher = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1, type=Type.ID)

_T = TypeVar("_T")
_EWMA = 0.2  # weight of the newest measurement in the time-per-hash estimate


def _timed(work: Callable[[], _T]) -> tuple[_T, float]:
    """Timed in the thread: a wait for a busy thread is not counted as hashing."""
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


class Overloaded(Exception):
    """The hash queue is longer than the login budget allows."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"password hashing is saturated; retry in {retry_after_s}s")
        self.retry_after_s = retry_after_s


class BoundedHasher:
    def __init__(self, *, concurrency: int = 0, budget_s: float = 5.0) -> None:
        self.concurrency = concurrency if concurrency > 0 else (os.cpu_count() or 1)
        self.budget_s = budget_s
        self._slots = asyncio.Semaphore(self.concurrency)  # FIFO for waiters
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="argon2")
        self._queued = 0  # admitted and not finished: running plus waiting
        self._dummy_hash = hasher.hash("slotkeeper-no-such-user")  # also warms up
        started = time.perf_counter()
        hasher.verify(self._dummy_hash, "slotkeeper-no-such-user")
        self.seconds_per_hash = time.perf_counter() - started

    def expected_wait_s(self) -> float:
        """How long a newcomer would wait for its hash to be done."""
        rounds = self._queued // self.concurrency + 1
        return rounds * self.seconds_per_hash

    async def run(self, work: Callable[[], _T]) -> _T:
        """``work`` (one hash's worth of CPU) in a hashing thread, or ``Overloaded``."""
        wait = self.expected_wait_s()
        # With a thread free, nothing is ahead: always admitted (and measured again).
        if self._queued >= self.concurrency and wait > self.budget_s:
            raise Overloaded(max(1, math.ceil(wait)))
        self._queued += 1
        try:
            async with self._slots:
                loop = asyncio.get_running_loop()
                result, took = await loop.run_in_executor(self._executor, _timed, work)
                self.seconds_per_hash += _EWMA * (took - self.seconds_per_hash)
                return result
        finally:
            self._queued -= 1

    async def hash(self, password: str) -> str:
        return await self.run(lambda: hasher.hash(password))

    async def verify(self, password_hash: str | None, password: str) -> tuple[bool, str | None]:
        """Whether ``password`` matches; and, if it does and the hash was made with
        other parameters, its re-hash with the current ones (same thread, same slot).

        ``password_hash`` None (unknown email) still costs one verification.
        """

        def check() -> tuple[bool, str | None]:
            try:
                hasher.verify(password_hash or self._dummy_hash, password)
            except (VerificationError, InvalidHashError):
                return False, None
            if password_hash is None:
                return False, None
            if hasher.check_needs_rehash(password_hash):
                return True, hasher.hash(password)
            return True, None

        return await self.run(check)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
