"""Drill 2: Sentinel failover under load. Primary + one replica + three sentinels;
clients hold, confirm and cancel through the API; the primary is SIGKILLed. The
API (which finds the primary through the sentinels) serves again within 15 s
without a restart, and no confirmation answered 200 is lost.

Also SLOTKEEPER_REDIS_MIN_REPLICAS: with the replica stopped a hold is 503, kept,
and its retry with the same key completes it once the replica is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from ..servers import PrivateRedis
from .conftest import DrillFactory
from .load import HOLD_TTL_S, Ledger, run_clients, settle_and_check, wait_for
from .sentinels import MASTER, sentinels

pytestmark = pytest.mark.timeout(120)

SLOTS = {n: 8 for n in range(1, 21)}
SERVE_AGAIN_S = 15.0


def _wait_replicating(replica: PrivateRedis, timeout_s: float = 10.0) -> None:
    client = redis.Redis(port=replica.port)
    try:
        deadline = time.monotonic() + timeout_s
        while client.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not connect to its primary")
            time.sleep(0.05)
    finally:
        client.close()


async def _setup(h: Any) -> tuple[list[int], list[dict[str, Any]]]:
    admin = await h.user(admin=True)
    for slot_id, capacity in SLOTS.items():
        r = await h.client.post(
            "/slots", json={"slot_id": slot_id, "capacity": capacity}, headers=admin["headers"]
        )
        assert r.status_code == 201, r.text
    return list(SLOTS), [await h.user() for _ in range(4)]


async def test_sentinel_failover_under_load_loses_no_confirmation(
    tmp_path: Path, make_drill_harness: DrillFactory
) -> None:
    with contextlib.ExitStack() as stack:
        primary = stack.enter_context(PrivateRedis(tmp_path / "primary", "--appendonly", "yes"))
        replica = stack.enter_context(
            PrivateRedis(
                tmp_path / "replica",
                "--appendonly",
                "yes",
                "--replicaof",
                "127.0.0.1",
                str(primary.port),
            )
        )
        _wait_replicating(replica)
        ports = stack.enter_context(sentinels(tmp_path, primary.port))
        h = await make_drill_harness(
            primary,
            with_worker=True,
            hold_ttl_s=HOLD_TTL_S,
            redis_sentinels=",".join(f"127.0.0.1:{p}" for p in ports),
            redis_sentinel_master=MASTER,
        )
        slots, users = await _setup(h)
        ledger, stop = Ledger(), asyncio.Event()
        clients = run_clients(h.client, users, slots, ledger, stop)
        try:
            await asyncio.sleep(1.5)
            holds_before = ledger.holds
            primary.kill()  # SIGKILL: whatever the replica had not received is gone
            killed = time.monotonic()

            async def serving() -> bool:
                return ledger.holds > holds_before + 20

            back_s = await wait_for(serving, SERVE_AGAIN_S + 5, "holds to succeed again")
            await asyncio.sleep(2.0)
        finally:
            stop.set()
            await asyncio.gather(*clients)
        role = (await h.ctx.redis.info("replication"))["role"]
        print(f"[sentinel] served again {back_s:.1f} s after the SIGKILL; now on the {role}")
        assert back_s <= SERVE_AGAIN_S and time.monotonic() > killed
        assert role == "master"
        await settle_and_check(h, ledger, "sentinel failover")


async def test_min_replicas_waits_for_the_replica_and_a_retry_completes(
    tmp_path: Path, make_drill_harness: DrillFactory
) -> None:
    with contextlib.ExitStack() as stack:
        primary = stack.enter_context(PrivateRedis(tmp_path / "primary"))
        replica = stack.enter_context(
            PrivateRedis(tmp_path / "replica", "--replicaof", "127.0.0.1", str(primary.port))
        )
        _wait_replicating(replica)
        h = await make_drill_harness(primary, redis_min_replicas=1, redis_wait_timeout_ms=300)
        admin, user = await h.user(admin=True), await h.user()
        r = await h.client.post("/slots", json={"capacity": 5}, headers=admin["headers"])
        slot_id = r.json()["slot_id"]
        key = {**user["headers"], "Idempotency-Key": "wait-1"}
        second = {**user["headers"], "Idempotency-Key": "wait-2"}
        r = await h.client.post(f"/slots/{slot_id}/hold", headers=key)
        assert r.status_code == 201, r.text  # the replica acknowledged it

        replica.pause()  # SIGSTOP: connected, acknowledges nothing
        try:
            r = await h.client.post(f"/slots/{slot_id}/hold", headers=second)
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] == "1"
            assert "replicas" in r.json()["detail"]
            assert (await h.ctx.engine.slot(slot_id)).held == 2  # the change is kept
        finally:
            replica.resume()
        _wait_replicating(replica)
        r = await h.client.post(f"/slots/{slot_id}/hold", headers=second)
        assert r.status_code == 201, r.text
        assert r.headers["idempotent-replayed"] == "true"
        hold_id = r.json()["hold_id"]
        r = await h.client.post(f"/holds/{hold_id}/confirm", headers=user["headers"])
        assert r.status_code == 200, r.text
