"""Concurrency against a real uvicorn process: no oversell, one hold per idempotency key."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx

from .live import live_server

_CAPACITY = 20
_REQUESTS = 300
_USERS = 4  # logins cost an argon2 verify each; the per-user cap is raised instead
_COPIES = 100
# These tests are about atomicity, not latency (test_live_outage covers the time
# budget): a generous backend timeout keeps a loaded test machine from turning a
# slow answer into a 503.
_TIMEOUT_MS = 5000


async def test_no_oversell_under_300_concurrent_holds(database: str, tmp_path: Path) -> None:
    async with (
        live_server(
            database,
            tmp_path,
            max_held_per_user_slot=_REQUESTS,
            hold_rate_per_minute=0,
            backend_timeout_ms=_TIMEOUT_MS,
        ) as server,
        server.client(max_connections=100) as client,
    ):
        admin = await server.user(client, admin=True)
        slot_id = await server.slot(client, admin, _CAPACITY)
        users = [await server.user(client) for _ in range(_USERS)]

        async def hold(i: int) -> httpx.Response:
            headers = {**users[i % _USERS]["headers"], "Idempotency-Key": f"k-{i}"}
            return await client.post(f"/slots/{slot_id}/hold", headers=headers)

        answers = await asyncio.gather(*(hold(i) for i in range(_REQUESTS)))

        statuses = Counter(r.status_code for r in answers)
        assert statuses == {201: _CAPACITY, 409: _REQUESTS - _CAPACITY}, (
            statuses,
            [r.text for r in answers if r.status_code not in (201, 409)][:3],
        )
        made = {r.json()["hold_id"] for r in answers if r.status_code == 201}
        assert len(made) == _CAPACITY
        for r in answers:
            if r.status_code == 409:
                assert r.headers["content-type"] == "application/problem+json"
                body = r.json()
                assert body["type"] == "/problems/capacity-exhausted", body
                assert body["remaining"] == 0, body

        slot = await server.engine.slot(slot_id)
        assert slot.remaining == 0
        assert slot.held == _CAPACITY
        assert slot.capacity == slot.remaining + slot.held + slot.confirmed == _CAPACITY


async def test_concurrent_copies_of_one_idempotency_key_make_one_hold(
    database: str, tmp_path: Path
) -> None:
    async with (
        live_server(database, tmp_path, backend_timeout_ms=_TIMEOUT_MS) as server,
        server.client(max_connections=100) as client,
    ):
        admin = await server.user(client, admin=True)
        slot_id = await server.slot(client, admin, 10)
        user = await server.user(client)
        headers = {**user["headers"], "Idempotency-Key": "one-key-many-copies"}

        answers = await asyncio.gather(
            *(client.post(f"/slots/{slot_id}/hold", headers=headers) for _ in range(_COPIES))
        )

        assert Counter(r.status_code for r in answers) == {201: _COPIES}, [
            r.text for r in answers if r.status_code != 201
        ][:3]
        assert len({r.json()["hold_id"] for r in answers}) == 1
        originals = [r for r in answers if "idempotent-replayed" not in r.headers]
        assert len(originals) == 1
        assert all(
            r.headers["idempotent-replayed"] == "true" for r in answers if r is not originals[0]
        )

        slot = await server.engine.slot(slot_id)
        assert slot.held == 1
        assert slot.remaining == 9
