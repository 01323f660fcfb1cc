"""bench/costs.py measures what it says: the holds it made, drained, with the CPU of
this process, of the PostgreSQL server's processes and of Redis."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from bench.costs import drain_costs, live_costs, postgres_cpu_s

from .conftest import SyncEnvFactory
from .helpers import make_slots, make_users


async def test_drain_costs_count_the_events_and_their_cpu(make_env: SyncEnvFactory) -> None:
    env = await make_env(max_held_per_user_slot=10**6)
    await make_users(env.pool, 1)
    await make_slots(env.engine, env.pool, [1, 2, 3, 4], capacity=10**6)
    bench: Any = SimpleNamespace(
        redis_url=env.settings.redis_url,
        dsn=env.settings.database_url,
        settings=env.settings,
        args=SimpleNamespace(slots=4),
    )
    costs = await drain_costs(bench, 600)
    assert costs.events == 600
    assert costs.events_per_s > 0
    assert costs.worker_us_per_event > 0 and costs.pg_us_per_event > 0
    total = costs.worker_us_per_event + costs.pg_us_per_event
    assert costs.worker_pg_us_per_event == pytest.approx(total)
    assert costs.redis_us_per_hold > costs.redis_drain_us_per_hold > 0
    assert await env.pool.fetchval("SELECT count(*) FROM hold_events") == 600

    live = await live_costs(bench, 300, rate=3000)
    assert await env.pool.fetchval("SELECT count(*) FROM hold_events") == 900
    assert live.redis_us_per_hold > 0 and live.pg_us_per_event > 0
    assert live.drain_commands_per_hold > 0 and "xreadgroup" in live.by_command


async def test_postgres_cpu_grows_with_work(make_env: SyncEnvFactory) -> None:
    from bench.costs import _postmaster

    env = await make_env()
    postmaster = _postmaster(int(await env.pool.fetchval("SELECT pg_backend_pid()")))
    before = postgres_cpu_s(postmaster)
    await env.pool.execute("SELECT count(*) FROM generate_series(1, 3000000)")
    assert postgres_cpu_s(postmaster) - before > 0.05
