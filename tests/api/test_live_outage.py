"""A real uvicorn process whose private Redis goes away, hangs, and comes back:
503 problem+json within the time budget, never a hang, recovery without a restart."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from ..servers import PrivateRedis
from .live import LiveServer, live_server

_BUDGET_S = 1.5  # the configured backend timeout (1 s) plus scheduling slack
_RECOVERY_S = 10.0


def _aof_redis(tmp_path: Path) -> PrivateRedis:
    # AOF so the partitions' state (and their epoch markers) survive the restart.
    return PrivateRedis(tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always")


async def _hold(
    client: httpx.AsyncClient, slot_id: int, user: dict[str, Any]
) -> tuple[httpx.Response, float]:
    headers = {**user["headers"], "Idempotency-Key": uuid.uuid4().hex}
    started = time.perf_counter()
    r = await client.post(f"/slots/{slot_id}/hold", headers=headers)
    return r, time.perf_counter() - started


async def _first_hold(
    server: LiveServer, client: httpx.AsyncClient
) -> tuple[int, dict[str, Any], httpx.Response]:
    """A slot of 100, a user and that user's first hold, made while Redis is up."""
    admin = await server.user(client, admin=True)
    slot_id = await server.slot(client, admin, 100)
    user = await server.user(client)
    first, _ = await _hold(client, slot_id, user)
    assert first.status_code == 201, first.text
    return slot_id, user, first


def _assert_unavailable(r: httpx.Response, elapsed_s: float, server: LiveServer) -> None:
    assert elapsed_s < _BUDGET_S, f"answered after {elapsed_s:.2f}s"
    assert r.status_code == 503, (r.status_code, r.text, server.log_tail())
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 503
    assert body["type"] in ("/problems/backend-unavailable", "/problems/state-unavailable")
    assert "6379" not in r.text and "redis://" not in r.text


async def _readyz_unavailable(client: httpx.AsyncClient) -> None:
    started = time.perf_counter()
    r = await client.get("/readyz")
    elapsed_s = time.perf_counter() - started
    assert elapsed_s < _BUDGET_S, f"/readyz answered after {elapsed_s:.2f}s"
    assert r.status_code == 503, r.text
    if r.headers["content-type"] == "application/problem+json":
        # A hanging Redis spends the whole request budget, so the middleware's
        # timeout answers before the probe's own (equal) timeout can report.
        assert r.json()["type"] == "/problems/backend-unavailable"
    else:
        assert r.json()["checks"]["redis"]["ok"] is False


async def _until_holds_work(
    client: httpx.AsyncClient, slot_id: int, user: dict[str, Any], server: LiveServer
) -> httpx.Response:
    deadline = time.monotonic() + _RECOVERY_S
    seen: list[int] = []
    while time.monotonic() < deadline:
        r, _ = await _hold(client, slot_id, user)
        if r.status_code == 201:
            return r
        seen.append(r.status_code)
        await asyncio.sleep(0.2)
    raise AssertionError(
        f"holds did not recover within {_RECOVERY_S}s; statuses {seen[-10:]}\n{server.log_tail()}"
    )


async def test_redis_stopped_answers_503_and_recovers_after_restart(
    database: str, tmp_path: Path
) -> None:
    with _aof_redis(tmp_path) as redis:
        async with (
            live_server(database, tmp_path / "api", redis_url=redis.url) as server,
            server.client(timeout_s=5.0) as client,
        ):
            slot_id, user, first = await _first_hold(server, client)

            await asyncio.to_thread(redis.stop)
            r, elapsed_s = await _hold(client, slot_id, user)
            _assert_unavailable(r, elapsed_s, server)
            await _readyz_unavailable(client)

            # Same port, same dir: the AOF brings the state back.
            await asyncio.to_thread(redis.start)
            again = await _until_holds_work(client, slot_id, user, server)
            assert again.json()["slot_id"] == slot_id
            assert (await client.get("/readyz")).status_code == 200
            kept = await client.get(f"/holds/{first.json()['hold_id']}", headers=user["headers"])
            assert kept.status_code == 200, kept.text
            assert kept.json()["status"] == "held"


async def test_redis_hanging_answers_503_in_time(database: str, tmp_path: Path) -> None:
    with _aof_redis(tmp_path) as redis:
        async with (
            live_server(database, tmp_path / "api", redis_url=redis.url) as server,
            server.client(timeout_s=5.0) as client,
        ):
            slot_id, user, _ = await _first_hold(server, client)

            redis.pause()  # connections are accepted by the kernel; nothing answers
            try:
                r, elapsed_s = await _hold(client, slot_id, user)
                _assert_unavailable(r, elapsed_s, server)
                await _readyz_unavailable(client)
            finally:
                redis.resume()

            await _until_holds_work(client, slot_id, user, server)
