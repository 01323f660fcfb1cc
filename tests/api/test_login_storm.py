"""A login storm against a real uvicorn process of `serve`: logins queue for the
hasher (api/hashing.py) instead of timing out together; a surplus beyond the login
budget is 503 `overloaded` with Retry-After; logged-in users are not slowed."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

from api.hashing import hasher
from api.users import create_user

from .live import LiveServer, live_server

_STORM = 200
_PASSWORD = "pw-storm-123456"


def _seconds_per_hash() -> float:
    stored = hasher.hash(_PASSWORD)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        hasher.verify(stored, _PASSWORD)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def _storm(
    server: LiveServer, client: httpx.AsyncClient
) -> list[tuple[httpx.Response, float]]:
    email = f"storm-{uuid.uuid4().hex[:8]}@example.com"
    await create_user(server.pool, email, _PASSWORD)
    gate = asyncio.Event()

    async def login() -> tuple[httpx.Response, float]:
        await gate.wait()
        started = time.perf_counter()
        r = await client.post("/auth/login", json={"email": email, "password": _PASSWORD})
        return r, time.perf_counter() - started

    tasks = [asyncio.ensure_future(login()) for _ in range(_STORM)]
    await asyncio.sleep(0)
    gate.set()
    return await asyncio.gather(*tasks)


async def test_200_concurrent_logins_all_answer_200_in_bounded_time(
    database: str, tmp_path: Path
) -> None:
    per_hash = _seconds_per_hash()
    cores = os.cpu_count() or 1
    # The queue's length in time, plus slack for a shared, loaded test machine.
    bound = _STORM * per_hash / cores * 4 + 5
    async with (
        live_server(database, tmp_path, login_timeout_ms=int(bound * 1000)) as server,
        server.client(max_connections=_STORM, timeout_s=bound + 10) as client,
    ):
        started = time.perf_counter()
        answers = await _storm(server, client)
        took = time.perf_counter() - started
    statuses = Counter(r.status_code for r, _ in answers)
    assert statuses == {200: _STORM}, (statuses, [r.text for r, _ in answers][:3])
    assert took < bound, (took, bound, per_hash)


async def test_with_a_tiny_queue_the_surplus_is_503_overloaded_with_retry_after(
    database: str, tmp_path: Path
) -> None:
    # Room for about 10 rounds of hashes (20 logins on 2 cores) of the 200.
    budget_ms = max(500, int(_seconds_per_hash() * 10 * 1000))
    async with (
        live_server(database, tmp_path, login_timeout_ms=budget_ms) as server,
        server.client(max_connections=_STORM, timeout_s=30) as client,
    ):
        answers = await _storm(server, client)
    statuses = Counter(r.status_code for r, _ in answers)
    assert set(statuses) == {200, 503}, (statuses, [r.text for r, _ in answers][:3])
    assert statuses[503] >= _STORM // 2, statuses  # the queue is tiny: most are refused
    for r, _ in answers:
        if r.status_code != 503:
            continue
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["type"] == "/problems/overloaded", body
        retry_after = int(r.headers["retry-after"])
        assert retry_after >= 1
        assert body["retry_after"] == retry_after


async def test_holds_by_a_logged_in_user_answer_within_budget_during_a_login_storm(
    database: str, tmp_path: Path
) -> None:
    async with (
        live_server(
            database, tmp_path, hold_rate_per_minute=0, max_held_per_user_slot=10_000
        ) as server,
        server.client(max_connections=_STORM) as storm_client,
        server.client(max_connections=4) as client,
    ):
        admin = await server.user(client, admin=True)
        slot_id = await server.slot(client, admin, 100_000)
        buyer = await server.user(client)
        storm = asyncio.ensure_future(_storm(server, storm_client))
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        while not storm.done():
            started = time.perf_counter()
            r = await client.post(
                f"/slots/{slot_id}/hold",
                headers={**buyer["headers"], "Idempotency-Key": uuid.uuid4().hex},
            )
            latencies.append(time.perf_counter() - started)
            statuses[r.status_code] += 1
            await asyncio.sleep(0.01)
        logins = Counter(r.status_code for r, _ in await storm)
    assert logins[200] > 0, logins
    assert len(latencies) >= 5, latencies  # the storm lasted
    assert statuses == {201: len(latencies)}, statuses
    budget = server.settings.backend_timeout_s
    assert max(latencies) < budget, (max(latencies), statistics.median(latencies))
