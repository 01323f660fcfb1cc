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


@pytest.mark.backends("redis")
async def test_a_library_lost_by_redis_is_loaded_again(
    make_engine: EngineFactory, redis_client: tuple[str, Any]
) -> None:
    # A restarted Redis without persistence, or a failover target that never had
    # it, answers "Function not found": the library is loaded again, the call repeated.
    engine = await make_engine()
    scripts = engine._scripts
    assert scripts.functions is True
    assert engine.hold_command(1, "u", "k")[0] == "FCALL"
    await engine.create_slot(1, 5)
    _, client = redis_client
    await client.function_delete(scripts.library)
    outcomes = await asyncio.gather(*(engine.hold(1, f"u{n}", "k") for n in range(4)))
    assert all(o.changed for o in outcomes)
    await client.function_delete(scripts.library)
    assert (await engine.update_slot(1, capacity=6)).remaining == 2  # not coalesced
    assert await engine.scripts_loaded()


@pytest.mark.backends("redis", "cluster")
async def test_without_functions_the_scripts_run_by_evalsha(
    make_engine: EngineFactory, redis_client: tuple[str, Any]
) -> None:
    # Redis < 7, an ACL without FUNCTION, and Redis Cluster (docs/decisions.md).
    engine = await make_engine()
    backend, _ = redis_client
    if backend == "redis":
        engine._scripts.functions = False
    assert engine._scripts.functions is False
    assert engine.hold_command(1, "u", "k")[0] == "EVALSHA"
    await engine.create_slot(1, 5)
    outcomes = await asyncio.gather(*(engine.hold(1, f"u{n}", "k") for n in range(5)))
    assert all(o.changed for o in outcomes)
    assert (await engine.slot(1)).remaining == 0
    await engine.load_scripts()
    assert await engine.scripts_loaded()


async def test_a_server_without_functions_is_noticed_once() -> None:
    from redis.exceptions import ResponseError

    from engine.scripts import Scripts

    class OldRedis:
        loads = 0

        async def function_load(self, code: str, replace: bool = False) -> str:
            self.loads += 1
            raise ResponseError("unknown command 'FUNCTION', with args beginning with: 'LOAD'")

    old = OldRedis()
    scripts = Scripts(old)
    await scripts.prepare(old)
    await scripts.prepare(old)
    assert scripts.functions is False and old.loads == 1
    assert scripts.command(scripts.hold, ["k"], ["a"])[0] == "EVALSHA"
