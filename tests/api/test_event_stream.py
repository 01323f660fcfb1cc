"""GET /events/stream on a real server (uvicorn, the worker in-process): a client that
disconnects and resumes with Last-Event-ID sees every event exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from api.cli import GRACEFUL_SHUTDOWN_S

from .live import live_server


async def _frames(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """The stream's events as {id, event, data}; comments and retry hints skipped."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in fields:
                yield fields
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")


async def _feed_ids(client: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
    out: list[str] = []
    after = "0"
    while True:
        r = await client.get(f"/events?after={after}&limit=1000", headers=headers)
        page = r.json()
        if not page:
            return out
        out.extend(e["id"] for e in page)
        after = page[-1]["id"]


async def test_stream_resumes_with_last_event_id_exactly_once(
    database: str, tmp_path: Path
) -> None:
    async with (
        live_server(database, tmp_path, with_worker=True, hold_rate_per_minute=0) as server,
        server.client() as client,
    ):
        admin = await server.user(client, admin=True)
        user = await server.user(client)
        slot_id = await server.slot(client, admin, capacity=1000)

        async def hold_and_confirm(count: int) -> None:
            for _ in range(count):
                r = await client.post(
                    f"/slots/{slot_id}/hold",
                    headers={**user["headers"], "Idempotency-Key": uuid.uuid4().hex},
                )
                assert r.status_code == 201, r.text
                r = await client.post(
                    f"/holds/{r.json()['hold_id']}/confirm", headers=user["headers"]
                )
                assert r.status_code == 200, r.text

        seen: list[dict[str, Any]] = []
        first_batch = 10
        async with client.stream(
            "GET", "/events/stream?after=0", headers=admin["headers"], timeout=None
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            producer = asyncio.create_task(hold_and_confirm(15))
            # Bounded: should the producer fail, the stream would wait for ever.
            async with asyncio.timeout(60):
                async for frame in _frames(response):
                    seen.append(frame)
                    if len(seen) == first_batch:
                        break  # the client goes away mid-stream
        await producer
        await hold_and_confirm(5)  # more happens while nobody listens
        total = 1 + 2 * 20  # slot.created, then a held and a confirmed per hold

        async def all_recorded() -> bool:
            return len(await _feed_ids(client, admin["headers"])) >= total

        for _ in range(200):
            if await all_recorded():
                break
            await asyncio.sleep(0.05)
        expected = await _feed_ids(client, admin["headers"])
        assert len(expected) == total

        # Resume: EventSource's way (Last-Event-ID), authenticated by a ticket.
        r = await client.post("/events/stream/ticket", headers=admin["headers"])
        ticket = r.json()["ticket"]
        async with client.stream(
            "GET",
            f"/events/stream?ticket={ticket}",
            headers={"Last-Event-ID": seen[-1]["id"]},
            timeout=None,
        ) as response:
            assert response.status_code == 200
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    async for frame in _frames(response):
                        seen.append(frame)
                        if len(seen) == total:
                            break
        ids = [f["id"] for f in seen]
        assert ids == expected, "an event was lost or repeated across the reconnect"
        assert [f["event"] for f in seen[:2]] == ["slot.created", "hold.held"]
        assert all(f'"id":"{f["id"]}"' in f["data"] for f in seen)

        # A stream never ends by itself; it must not keep the server from stopping.
        async with client.stream(
            "GET", "/events/stream", headers=admin["headers"], timeout=None
        ) as response:
            assert response.status_code == 200
            started = time.monotonic()
            server.process.terminate()
            with contextlib.suppress(httpx.TransportError):
                async for _ in response.aiter_lines():
                    pass
            await asyncio.to_thread(server.process.wait, 15)
            assert time.monotonic() - started < GRACEFUL_SHUTDOWN_S + 3
