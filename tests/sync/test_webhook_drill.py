"""Webhook delivery drill: `slotkeeper worker` processes deliver to a local receiver
that refuses the first deliveries; one worker is SIGKILLed mid-delivery. Every event
arrives (at least once), in order per slot, each signature verifies."""

from __future__ import annotations

from pathlib import Path

from sync import outbox

from ..api.test_webhooks import assert_in_order_per_slot
from .conftest import SyncEnvFactory
from .helpers import (
    cli_env,
    gather_in_chunks,
    hold_many,
    make_slots,
    make_users,
    start_worker,
    wait_until,
)
from .receiver import receiver, verify

HOLDS = 150


async def test_deliveries_survive_a_killed_worker(make_env: SyncEnvFactory, tmp_path: Path) -> None:
    env = await make_env(max_held_per_user_slot=1000)
    engine, pool = env.engine, env.pool
    async with receiver(refuse=5, delay_s=0.01) as recv:
        hook, secret = await outbox.create_webhook(pool, recv.url, ["*"])
        users = await make_users(pool, 3)
        slots = list(range(1, 7))
        await make_slots(engine, pool, slots, capacity=1000)
        holds = await hold_many(engine, slots, users, HOLDS)
        await gather_in_chunks(
            [lambda h=h: engine.confirm(h.hold_id, h.user_id) for h in holds[: HOLDS // 2]]
        )
        events = len(slots) + HOLDS + HOLDS // 2

        async def delivered() -> int:
            return int(
                await pool.fetchval(
                    "SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'"
                )
            )

        worker_env = cli_env(
            env.settings,
            tmp_path,
            SLOTKEEPER_SYNC_CLAIM_IDLE_MS="500",
            SLOTKEEPER_WEBHOOK_TIMEOUT_MS="1000",
            SLOTKEEPER_WEBHOOK_BACKOFF_MS="50",
        )
        first = await start_worker(worker_env, tmp_path / "worker-1.log")
        try:

            async def midway() -> bool:
                return len(recv.accepted) >= events // 3

            await wait_until(midway, timeout_s=60, interval_s=0.005)
            first.kill()  # SIGKILL: deliveries in flight are neither recorded nor released
            await first.wait()
        finally:
            if first.returncode is None:
                first.kill()
                await first.wait()
        at_kill = len(recv.accepted)
        assert at_kill < events, "killed too late"

        second = await start_worker(worker_env, tmp_path / "worker-2.log")
        try:

            async def done() -> bool:
                return await delivered() == events

            await wait_until(done, timeout_s=60, interval_s=0.05)
        finally:
            second.terminate()
            await second.wait()

    feed_ids = [r["feed_id"] for r in await pool.fetch("SELECT feed_id FROM feed ORDER BY 1")]
    assert len(feed_ids) == events
    accepted = {int(d.event["id"]) for d in recv.accepted}
    assert sorted(accepted) == feed_ids, "an event never arrived"
    assert_in_order_per_slot(recv.requests)
    assert all(verify(secret, d) == 1 for d in recv.requests)
    assert sum(d.status == 503 for d in recv.requests) == 5
    duplicates = len(recv.accepted) - len(accepted)
    print(f"killed at {at_kill}/{events} accepted; {duplicates} delivered twice (at least once)")
    assert hook["enabled"]
