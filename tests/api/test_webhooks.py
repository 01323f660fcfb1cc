"""Webhooks: the admin routes, and delivery by the worker's dispatcher to a local
receiver that refuses the first deliveries: every event arrives, in order per slot,
signed (Standard Webhooks); rotation signs with both secrets; an endpoint that keeps
failing is disabled with the reason, and loses nothing when enabled again."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sync.drain import drain_all
from sync.webhooks import WebhookDispatcher, WebhookSettings, sign

from ..sync.receiver import Delivery, Receiver, receiver, verify
from .conftest import Harness
from .support import User, assert_problem, held, new_slot, new_user, next_link


async def _events(h: Harness) -> list[dict[str, Any]]:
    rows = await h.ctx.pool.fetch("SELECT feed_id, slot_id FROM feed ORDER BY feed_id")
    return [dict(r) for r in rows]


def assert_in_order_per_slot(requests: list[Delivery]) -> None:
    """Per slot, event ids never go back (a retry repeats the same id; nothing overtakes)."""
    seen: dict[Any, list[int]] = defaultdict(list)
    for d in requests:
        seen[d.event["slot_id"]].append(int(d.event["id"]))
    for slot_id, ids in seen.items():
        assert ids == sorted(ids), f"slot {slot_id} out of order: {ids}"


@asynccontextmanager
async def dispatching(h: Harness, **settings: Any) -> AsyncIterator[WebhookDispatcher]:
    values = {"timeout_s": 2.0, "backoff_s": 0.05, **settings}
    dispatcher = WebhookDispatcher(h.ctx.pool, WebhookSettings(**values))
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await dispatcher.close()


async def _wait(probe: Any, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await probe():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def _activity(h: Harness, admin: User, user: User, slots: int = 3) -> None:
    for _ in range(slots):
        slot_id = await new_slot(h, admin, capacity=10)
        for _ in range(3):
            hold = await held(h, user, slot_id)
            await h.client.post(f"/holds/{hold['hold_id']}/confirm", headers=user.headers)
        await h.client.delete(f"/holds/{hold['hold_id']}", headers=user.headers)


async def test_webhook_routes(harness: Harness) -> None:
    h = harness
    admin = await new_user(h, admin=True)
    user = await new_user(h)
    body = {"url": "https://example.com/hooks", "events": ["hold.confirmed", "hold.cancelled"]}
    assert_problem(await h.client.post("/webhooks", json=body, headers=user.headers), 403)
    r = await h.client.post("/webhooks", json=body, headers=admin.headers)
    assert r.status_code == 201, r.text
    hook = r.json()
    url = f"/webhooks/{hook['id']}"
    assert hook["secret"].startswith("whsec_") and r.headers["location"] == url
    assert hook["enabled"] is True and hook["events"] == body["events"]
    r = await h.client.get(f"/webhooks/{hook['id']}", headers=admin.headers)
    assert r.status_code == 200 and "secret" not in r.json()
    r = await h.client.get("/webhooks", headers=admin.headers)
    assert [w["id"] for w in r.json()] == [hook["id"]]
    r = await h.client.patch(
        f"/webhooks/{hook['id']}", json={"events": ["*"], "enabled": False}, headers=admin.headers
    )
    assert r.status_code == 200 and r.json()["events"] == ["*"]
    assert r.json()["enabled"] is False and r.json()["disabled_reason"]
    r = await h.client.patch(url, json={"enabled": True}, headers=admin.headers)
    assert r.json()["enabled"] is True and r.json()["disabled_reason"] is None
    r = await h.client.post(f"/webhooks/{hook['id']}/rotate-secret", headers=admin.headers)
    assert r.status_code == 200 and r.json()["secret"] not in (hook["secret"],)
    assert r.json()["previous_secret_expires_at"]
    r = await h.client.get(f"/webhooks/{hook['id']}/deliveries", headers=admin.headers)
    assert r.status_code == 200 and r.json() == []
    for bad in (
        {"url": "ftp://example.com", "events": ["*"]},
        {"url": "not a url", "events": ["*"]},
        {"url": "https://example.com"},
        {"url": "https://example.com", "events": []},
        {"url": "https://example.com", "events": ["hold.nope"]},
        {"url": "https://example.com", "events": "*"},
        {"url": "https://example.com", "events": ["*"], "enabled": True},
        {"url": "https://example.com", "events": ["*"], "extra": 1},
        [],
    ):
        assert_problem(await h.client.post("/webhooks", json=bad, headers=admin.headers), 422)
    r = await h.client.patch(f"/webhooks/{hook['id']}", json={"enabled": 1}, headers=admin.headers)
    assert_problem(r, 422)
    assert (await h.client.delete(url, headers=admin.headers)).status_code == 204
    for method in ("GET", "PATCH", "DELETE"):
        r = await h.client.request(method, url, json={}, headers=admin.headers)
        assert_problem(r, 404)
    assert_problem(await h.client.get("/webhooks/abc", headers=admin.headers), 400)
    r = await h.client.get(f"/webhooks/{hook['id']}/deliveries", headers=admin.headers)
    assert_problem(r, 404)


async def test_refused_deliveries_are_retried_in_order_and_signed(harness: Harness) -> None:
    h = harness
    admin = await new_user(h, admin=True)
    user = await new_user(h)
    async with receiver(refuse=6) as recv:
        r = await h.client.post(
            "/webhooks", json={"url": recv.url, "events": ["*"]}, headers=admin.headers
        )
        hook = r.json()
        other = await h.client.post(
            "/webhooks",
            json={"url": recv.url + "?b", "events": ["slot.created"]},
            headers=admin.headers,
        )
        await _activity(h, admin, user)
        await drain_all(h.ctx.engine, h.ctx.redis, h.ctx.pool)
        events = await _events(h)
        slots = {e["slot_id"] for e in events}
        wanted = len(events) + len(slots)  # everything to one, slot.created to the other
        async with dispatching(h) as dispatcher:
            await _wait(lambda: _accepted(recv, wanted))
            assert dispatcher.delivered_total == wanted
        assert len(recv.requests) == wanted + 6
        assert_in_order_per_slot(recv.requests)
        accepted_ids = sorted(int(d.event["id"]) for d in recv.accepted)
        all_ids = [e["feed_id"] for e in events]
        assert sorted(set(accepted_ids)) == all_ids
        for d in recv.requests:
            assert d.headers["webhook-id"] == f"evt_{d.event['id']}"
            assert abs(int(d.headers["webhook-timestamp"]) - time.time()) < 60
            assert d.headers["content-type"] == "application/json"
            mine = not d.target.endswith("?b")
            assert verify((hook if mine else other.json())["secret"], d) == 1, d.headers
            assert verify((other.json() if mine else hook)["secret"], d) == 0
        # The delivery log tells what happened, newest first, paginated.
        r = await h.client.get(f"/webhooks/{hook['id']}/deliveries?limit=5", headers=admin.headers)
        log = r.json()
        assert r.status_code == 200 and len(log) == 5 and next_link(r)
        assert all(x["status"] == "delivered" and x["last_status"] == 204 for x in log)
        ids = [x["id"] for x in log]
        assert ids == sorted(ids, reverse=True)
        full = []
        url: str | None = f"/webhooks/{hook['id']}/deliveries?limit=7"
        while url:
            r = await h.client.get(url, headers=admin.headers)
            full.extend(r.json())
            url = next_link(r)
        assert len(full) == len(events)
        assert sum(x["attempts"] for x in full) >= len(events) + 1

        # Rotation: the next delivery carries two signatures, one per valid secret.
        r = await h.client.post(f"/webhooks/{hook['id']}/rotate-secret", headers=admin.headers)
        new_secret = r.json()["secret"]
        before = len(recv.requests)
        await held(h, user, await new_slot(h, admin))
        await drain_all(h.ctx.engine, h.ctx.redis, h.ctx.pool)
        async with dispatching(h):
            await _wait(lambda: _accepted(recv, wanted + 3))
        for d in recv.requests[before:]:
            if d.event["type"] == "hold.held":
                assert len(d.headers["webhook-signature"].split(" ")) == 2
                assert verify(new_secret, d) == 1 and verify(hook["secret"], d) == 1


async def _accepted(recv: Receiver, count: int) -> bool:
    return len(recv.accepted) >= count


async def test_endpoint_failing_past_the_window_is_disabled_and_resumes(harness: Harness) -> None:
    h = harness
    admin = await new_user(h, admin=True)
    user = await new_user(h)
    async with receiver(refuse=10**9) as recv:
        r = await h.client.post(
            "/webhooks", json={"url": recv.url, "events": ["hold.held"]}, headers=admin.headers
        )
        hook = r.json()
        slot_id = await new_slot(h, admin)
        for _ in range(3):
            await held(h, user, slot_id)
        await drain_all(h.ctx.engine, h.ctx.redis, h.ctx.pool)

        async def disabled() -> bool:
            r = await h.client.get(f"/webhooks/{hook['id']}", headers=admin.headers)
            return r.json()["enabled"] is False

        async with dispatching(h, retry_for_s=0.5):
            await _wait(disabled)
            tried = len(recv.requests)
            await asyncio.sleep(0.3)
            assert len(recv.requests) == tried, "a disabled endpoint is still called"
        r = await h.client.get(f"/webhooks/{hook['id']}", headers=admin.headers)
        assert "HTTP 503" in r.json()["disabled_reason"]
        # Only the head of the slot's queue was tried; the others waited their turn.
        assert {d.event["data"]["version"] for d in recv.requests} == {1}
        assert len({d.event["id"] for d in recv.requests}) == 1
        url = f"/webhooks/{hook['id']}"
        log = (await h.client.get(f"{url}/deliveries", headers=admin.headers)).json()
        assert [x["status"] for x in log] == ["pending"] * 3
        assert log[-1]["attempts"] == tried and "503" in log[-1]["last_error"]

        recv.refuse = 0
        recv.requests.clear()
        r = await h.client.patch(url, json={"enabled": True}, headers=admin.headers)
        assert r.json()["enabled"] is True
        async with dispatching(h):
            await _wait(lambda: _accepted(recv, 3))
        assert_in_order_per_slot(recv.requests)
        assert len(recv.accepted) == 3


def test_signature_matches_the_standard_webhooks_example() -> None:
    """The example of the Standard Webhooks reference libraries."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    msg_id = "msg_p5jXN8AQM9LWM0D4loKWxJek"
    body = b'{"test": 2432232314}'
    assert sign(secret, msg_id, 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


async def test_a_slow_endpoint_does_not_hold_up_another(harness: Harness) -> None:
    h = harness
    admin = await new_user(h, admin=True)
    user = await new_user(h)
    async with receiver(delay_s=1.5) as slow, receiver() as fast:
        for recv in (slow, fast):
            r = await h.client.post(
                "/webhooks", json={"url": recv.url, "events": ["*"]}, headers=admin.headers
            )
            assert r.status_code == 201
        await _activity(h, admin, user, slots=2)
        await drain_all(h.ctx.engine, h.ctx.redis, h.ctx.pool)
        events = await _events(h)
        started = time.monotonic()
        async with dispatching(h, timeout_s=5.0):
            await _wait(lambda: _accepted(fast, len(events)), timeout_s=5)
            took = time.monotonic() - started
            assert len(slow.requests) < len(events)
        assert took < 1.5, f"the fast endpoint waited for the slow one ({took:.1f} s)"
        assert_in_order_per_slot(fast.requests)
