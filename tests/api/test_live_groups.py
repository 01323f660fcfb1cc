"""Hold groups against a real uvicorn process killed with SIGKILL half-way through
100 groups: after the pending lifetime (and the group sweep) nothing leaks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson

from .live import live_server

_PENDING_MS = 500  # the group sweep undoes a half-made group after 2 x this
_GROUPS = 100
_SLOTS = 5


async def test_api_killed_mid_groups_leaks_nothing(database: str, tmp_path: Path) -> None:
    async with (
        live_server(
            database,
            tmp_path,
            group_pending_ms=_PENDING_MS,
            max_held_per_user_slot=1000,
            hold_rate_per_minute=0,
            backend_timeout_ms=5000,
        ) as server,
        server.client(max_connections=100) as client,
    ):
        admin = await server.user(client, admin=True)
        slots = [await server.slot(client, admin, 100) for _ in range(_SLOTS)]
        users = [await server.user(client) for _ in range(3)]
        rng = random.Random(13)

        async def group(n: int) -> int:
            items = [{"slot_id": s} for s in rng.sample(slots, 3)]
            headers = {**users[n % 3]["headers"], "Idempotency-Key": f"g-{n}"}
            with contextlib.suppress(httpx.TransportError):
                r = await client.post("/holds", json={"items": items}, headers=headers)
                return r.status_code
            return 0  # the process died under it

        due = [f"{server.engine.keys.prefix}{{p{p}}}:groups_due" for p in range(4)]

        async def half_made() -> int:
            return sum([await server.redis.zcard(key) for key in due])

        tasks = [asyncio.create_task(group(n)) for n in range(_GROUPS)]
        # Freeze the process while groups are half-made (pending records in their due
        # sets, which a frozen process cannot commit), then kill it: no shutdown, no
        # cleanup. If the records were committed meanwhile, let it run and try again.
        pid = server.process.pid
        for _ in range(1_000_000):  # polls Redis; bounded all the same
            if all(t.done() for t in tasks):
                raise AssertionError("every group finished before the kill")
            if await half_made() >= 1:
                os.kill(pid, signal.SIGSTOP)
                await asyncio.sleep(0.1)  # commands already sent finish in Redis
                if await half_made() >= 1:
                    break
                os.kill(pid, signal.SIGCONT)
        server.process.kill()  # SIGKILL
        statuses = Counter(await asyncio.gather(*tasks))
        assert set(statuses) <= {201, 0}, statuses

        # The pending lifetime and its grace pass; the worker's sweep runs (here, by hand).
        await asyncio.sleep(2 * _PENDING_MS / 1000 + 0.3)
        engine = server.engine
        swept = 0
        for p in range(engine.settings.partitions):
            swept += await engine.groups.sweep(p)
        # The kill landed while some groups were half-made (seen in their due sets).
        assert swept >= 1

        records = [
            orjson.loads(await server.redis.get(key))
            async for key in server.redis.scan_iter(match=f"{engine.keys.prefix}*:group:*")
        ]
        assert {r["st"] for r in records} <= {"held"}, Counter(r["st"] for r in records)
        members = {m[0] for r in records for m in r["m"]}
        held: dict[str, Any] = {}
        for p in range(engine.settings.partitions):
            for h in await engine.partition_holds(p):
                if h.status == "held":
                    held[h.hold_id] = h
        # Every held unit belongs to a whole, held group: no partial group, no leak.
        assert set(held) == members
        per_slot: Counter[int] = Counter(h.slot_id for h in held.values())
        for slot_id in slots:
            s = await engine.slot(slot_id)
            assert s.held == per_slot[slot_id]
            assert s.capacity == s.remaining + s.held + s.confirmed == 100
