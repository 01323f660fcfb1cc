"""Fault drills: a private redis-server the test may SIGKILL, flush and start again
on the same port and data directory, and the app in-process on top of it.

The shared Redis is never touched here: every drill runs on its own server,
stopped by PID when the test ends.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The per-test database fixtures, shared with the API tests.
from ..api.conftest import Harness, database, make_settings, template_db  # noqa: F401
from ..servers import PrivateRedis

RedisFactory = Callable[..., PrivateRedis]
DrillFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[RedisFactory]:
    """Starts private redis-servers (extra server arguments as given) for one test."""
    numbers = itertools.count()
    with contextlib.ExitStack() as stack:

        def factory(*args: str) -> PrivateRedis:
            workdir = tmp_path / f"redis-{next(numbers)}"
            return stack.enter_context(PrivateRedis(workdir, *args))

        yield factory


@pytest.fixture
async def make_drill_harness(database: str) -> AsyncIterator[DrillFactory]:  # noqa: F811
    """The app in-process on a private Redis and a fresh migrated database.

    No sync worker runs unless the test starts one; every partition is built
    (empty) before the factory returns.
    """
    built: list[Harness] = []

    async def factory(server: PrivateRedis, **overrides: Any) -> Harness:
        values: dict[str, Any] = {
            "redis_url": server.url,
            "hold_rate_per_minute": 0,
            "max_held_per_user_slot": 1_000,
            **overrides,
        }
        harness = await Harness.build(make_settings(database, **values), "http://drill")
        built.append(harness)
        return harness

    yield factory
    for h in built:
        await h.close(drop_keys=False)  # a private server: its keys die with it
