"""Clients holding, confirming and cancelling through the API while a drill breaks
Redis, and the ledger that says whether anything promised was lost."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from sync.drain import drain_all

from ..api.conftest import Harness

__all__ = ["HOLD_TTL_S", "Ledger", "check_ledger", "run_clients", "settle_and_check", "wait_for"]

# Drills run with short holds, so everything left held has expired when they check.
HOLD_TTL_S = 2


@dataclass
class Ledger:
    """What the clients were told: only successes are promises."""

    holds: int = 0  # answered 201
    acknowledged: int = 0  # confirms answered 200
    # Bookings answered 200 and not cancelled since: hold id -> its owner's headers.
    confirmed: dict[str, dict[str, str]] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)  # bookings cancelled, answered 200
    refused: Counter[str] = field(default_factory=Counter)  # "op status" of the rest
    lost: list[str] = field(default_factory=list)
    oversold: list[str] = field(default_factory=list)

    def line(self, name: str) -> str:
        return (
            f"[{name}] holds {self.holds}, confirms acknowledged {self.acknowledged}"
            f" ({len(self.cancelled)} cancelled since, {len(self.confirmed)} checked),"
            f" lost {len(self.lost)},"
            f" oversold {len(self.oversold)}; refusals {dict(self.refused)}"
        )


async def _client(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    slots: list[int],
    ledger: Ledger,
    stop: asyncio.Event,
    rng: random.Random,
) -> None:
    mine: list[str] = []
    booked: list[str] = []
    while not stop.is_set():
        roll = rng.random()
        try:
            if booked and roll < 0.03:
                hold_id = booked.pop(rng.randrange(len(booked)))
                r = await client.delete(f"/holds/{hold_id}", headers=headers)
                if r.status_code == 200 and r.json()["status"] == "cancelled":
                    ledger.confirmed.pop(hold_id, None)
                    ledger.cancelled.add(hold_id)
                    continue
                ledger.refused[f"cancel {r.status_code}"] += 1
                booked.append(hold_id)  # not known to be cancelled: still a promise
            elif mine and roll < 0.5:
                hold_id = mine.pop(rng.randrange(len(mine)))
                r = await client.post(f"/holds/{hold_id}/confirm", headers=headers)
                if r.status_code == 200:
                    assert r.json()["status"] == "confirmed"
                    ledger.acknowledged += 1
                    ledger.confirmed[hold_id] = headers
                    booked.append(hold_id)
                    continue
                ledger.refused[f"confirm {r.status_code}"] += 1
            else:
                r = await client.post(
                    f"/slots/{rng.choice(slots)}/hold",
                    json={"quantity": rng.randint(1, 2)},
                    headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
                )
                if r.status_code == 201:
                    ledger.holds += 1
                    mine.append(r.json()["hold_id"])
                    continue
                ledger.refused[f"hold {r.status_code}"] += 1
        except httpx.TransportError:
            ledger.refused["transport"] += 1
        await asyncio.sleep(0.01)  # refused: back off a little


def run_clients(
    client: httpx.AsyncClient,
    users: list[dict[str, Any]],
    slots: list[int],
    ledger: Ledger,
    stop: asyncio.Event,
    count: int = 8,
) -> list[asyncio.Task[None]]:
    return [
        asyncio.create_task(
            _client(client, users[n % len(users)]["headers"], slots, ledger, stop, random.Random(n))
        )
        for n in range(count)
    ]


async def check_ledger(client: httpx.AsyncClient, pool: Any, ledger: Ledger) -> None:
    """Every confirm answered 200 (and not cancelled since) is confirmed in
    PostgreSQL and through the API; no slot has confirmed + held > capacity in
    PostgreSQL. Fills ledger.lost and ledger.oversold."""
    rows = await pool.fetch(
        "SELECT hold_id, status FROM holds WHERE hold_id = ANY($1::text[])", list(ledger.confirmed)
    )
    in_pg = {r["hold_id"]: r["status"] for r in rows}
    for hold_id, headers in ledger.confirmed.items():
        if in_pg.get(hold_id) != "confirmed":
            ledger.lost.append(f"{hold_id}: postgres {in_pg.get(hold_id)}")
            continue
        r = await client.get(f"/holds/{hold_id}", headers=headers)
        if r.status_code != 200 or r.json()["status"] != "confirmed":
            ledger.lost.append(f"{hold_id}: api {r.status_code} {r.text[:100]}")
    for row in await pool.fetch(
        "SELECT s.slot_id, s.capacity, s.confirmed,"
        " coalesce(sum(h.quantity) FILTER (WHERE h.status = 'confirmed'), 0) AS booked,"
        " coalesce(sum(h.quantity) FILTER (WHERE h.status = 'held'), 0) AS held"
        " FROM slots s LEFT JOIN holds h USING (slot_id) GROUP BY s.slot_id"
    ):
        if row["booked"] + row["held"] > row["capacity"] or row["booked"] != row["confirmed"]:
            ledger.oversold.append(str(dict(row)))


async def wait_for(condition: Any, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def settle_and_check(h: Harness, ledger: Ledger, name: str) -> None:
    """Load stopped: the service is whole again by itself, every held hold has
    expired, PostgreSQL caught up; then the ledger."""
    engine, redis, pool = h.ctx.engine, h.ctx.redis, h.ctx.pool

    async def whole() -> bool:
        return await engine.unavailable_partitions() == []

    await wait_for(whole, 10, "every partition to be rebuilt")

    async def settled() -> bool:
        await drain_all(engine, redis, pool)
        held = await pool.fetchval("SELECT count(*) FROM holds WHERE status = 'held'")
        return held == 0 and await engine.unavailable_partitions() == []

    await wait_for(settled, HOLD_TTL_S + 10, "held holds to expire and reach PostgreSQL")
    await check_ledger(h.client, pool, ledger)
    print(ledger.line(name))
    assert ledger.lost == [], ledger.lost[:5]
    assert ledger.oversold == [], ledger.oversold[:5]
    assert ledger.acknowledged > 50 and ledger.holds > 100, ledger.line(name)
