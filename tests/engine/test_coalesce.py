"""Script calls of one event-loop turn travel as one pipeline, and still behave one by one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine import CapacityExhausted, Engine

from ..conftest import EngineFactory


@pytest.mark.backends("redis", "cluster")
async def test_concurrent_holds_share_pipelines_and_keep_their_own_answers(
    make_engine: EngineFactory, redis_client: tuple[str, Any]
) -> None:
    engine = await make_engine()
    await engine.create_slot(1, 50)
    await engine.create_slot(2, 50)
    sent: list[int] = []
    original = engine._coalescer._send  # type: ignore[union-attr]

    async def spy(batch: list[Any]) -> None:
        sent.append(len(batch))
        await original(batch)

    engine._coalescer._send = spy  # type: ignore[union-attr,method-assign]
    outcomes = await asyncio.gather(
        *(engine.hold(1 + n % 2, f"u{n}", "k", 1) for n in range(100)), return_exceptions=True
    )
    assert sum(sent) == 100 and len(sent) < 10, sent  # batched, not 100 round trips
    assert [type(o) for o in outcomes].count(CapacityExhausted) == 0
    held = {o.hold.hold_id for o in outcomes if not isinstance(o, BaseException)}
    assert len(held) == 100
    slots = {s.slot_id: s for s in await engine.availability()}
    assert slots[1].held == slots[2].held == 50


@pytest.mark.backends("redis")
async def test_scripts_flushed_from_redis_are_reloaded(
    make_engine: EngineFactory, redis_client: tuple[str, Any]
) -> None:
    # A restarted Redis has no scripts: the calls in the pipeline answer NOSCRIPT
    # and each is retried alone through redis-py's reload path.
    engine = await make_engine()
    await engine.create_slot(1, 5)
    _, client = redis_client
    await client.script_flush()
    outcomes = await asyncio.gather(*(engine.hold(1, f"u{n}", "k") for n in range(5)))
    assert all(o.changed for o in outcomes)
    assert (await engine.slot(1)).remaining == 0


async def test_a_dead_connection_fails_every_call_of_the_batch() -> None:
    import redis.asyncio as aioredis

    from engine import BackendUnavailable, EngineSettings

    client = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    engine = Engine(client, EngineSettings(key_prefix="dead:"))
    outcomes = await asyncio.gather(
        *(engine.hold(1, f"u{n}", "k") for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, BackendUnavailable) for o in outcomes), outcomes
    await client.aclose()
