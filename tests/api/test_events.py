"""GET /events: every transition from the durable record, oldest first, paginated,
filtered; the cursor never skips an event that commits late; the stream's auth."""

from __future__ import annotations

import asyncio
from typing import Any

import jwt

from api import events_routes
from sync import feed
from sync.events import Entry

from .conftest import Harness
from .support import User, assert_problem, held, new_slot, new_user, next_link


async def _drain(h: Harness) -> int:
    from sync.drain import drain_all

    return await drain_all(h.ctx.engine, h.ctx.redis, h.ctx.pool)


async def _all(h: Harness, admin: User, url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        r = await h.client.get(url, headers=admin.headers)
        assert r.status_code == 200, r.text
        page = r.json()
        if not page:
            return out
        out.extend(page)
        link = next_link(r)
        assert link is not None
        url = link


async def test_feed_lists_every_transition_in_order_with_filters(harness: Harness) -> None:
    h = harness
    admin = await new_user(h, admin=True)
    user = await new_user(h)
    a = await new_slot(h, admin, capacity=5, label="Gate A")
    b = await new_slot(h, admin, capacity=5)
    first = await held(h, user, a, quantity=2)
    second = await held(h, user, b)
    r = await h.client.post(f"/holds/{first['hold_id']}/confirm", headers=user.headers)
    assert r.status_code == 200, r.text
    r = await h.client.delete(f"/holds/{second['hold_id']}", headers=user.headers)
    assert r.status_code == 200, r.text
    r = await h.client.patch(f"/slots/{a}", json={"capacity": 7}, headers=admin.headers)
    assert r.status_code == 200, r.text
    await _drain(h)

    events = await _all(h, admin, "/events?limit=2")
    kinds = [(e["type"], e["slot_id"]) for e in events]
    # Across partitions the feed is in commit order; per slot, in the order things happened.
    assert sorted(kinds) == sorted(
        [
            ("slot.created", a),
            ("slot.created", b),
            ("hold.held", a),
            ("hold.held", b),
            ("hold.confirmed", a),
            ("hold.cancelled", b),
            ("slot.updated", a),
        ]
    )
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    on_a = [e["type"] for e in events if e["slot_id"] == a]
    assert on_a == ["slot.created", "hold.held", "hold.confirmed", "slot.updated"]
    confirmed = next(e for e in events if e["type"] == "hold.confirmed")
    assert confirmed["data"]["hold_id"] == first["hold_id"]
    assert confirmed["data"]["quantity"] == 2 and confirmed["data"]["status"] == "confirmed"
    assert confirmed["data"]["user_id"] == int(user.user_id)  # rendered as a number
    assert "confirmed_at" in confirmed["data"] and confirmed["timestamp"].endswith("Z")
    created = events[0]["data"]
    assert created["capacity"] == 5 and created["remaining"] == 5

    only_b = await _all(h, admin, f"/events?slot_id={b}")
    assert [e["type"] for e in only_b] == ["slot.created", "hold.held", "hold.cancelled"]
    holds = await _all(h, admin, "/events?type=hold.*")
    assert {e["type"] for e in holds} == {"hold.held", "hold.confirmed", "hold.cancelled"}
    two = await _all(h, admin, "/events?type=hold.confirmed,slot.updated")
    assert [e["type"] for e in two] == ["hold.confirmed", "slot.updated"]

    # A cursor stays valid: reading after the 3rd event gives exactly the rest.
    rest = await _all(h, admin, f"/events?after={events[2]['id']}")
    assert rest == events[3:]
    # Draining again (a claimed batch written twice) adds nothing to the feed.
    await _drain(h)
    assert await _all(h, admin, "/events") == events
    # An empty page still says where to continue.
    r = await h.client.get(f"/events?after={events[-1]['id']}", headers=admin.headers)
    assert r.json() == [] and next_link(r) is not None and events[-1]["id"] in next_link(r)


async def test_feed_refuses_bad_queries_and_non_admins(harness: Harness) -> None:
    h = harness
    admin = await new_user(h, admin=True)
    user = await new_user(h)
    assert_problem(await h.client.get("/events", headers=user.headers), 403, "forbidden")
    assert_problem(await h.client.get("/events"), 401, "unauthorized")
    for query in (
        "after=abc",
        "after=-1",
        "after=99999999999999999999",
        "slot_id=0",
        "slot_id=x",
        "type=hold.nope",
        "type=nothing",
        "limit=0",
        "limit=1001",
    ):
        assert_problem(await h.client.get(f"/events?{query}", headers=admin.headers), 400)


async def test_ids_become_visible_in_commit_order(harness: Harness) -> None:
    """A transaction that drew its ids later cannot commit below a visible id: the
    second writer waits for the first one's commit before it draws any."""
    pool = harness.ctx.pool
    admin = await new_user(harness, admin=True)
    slot_id = await new_slot(harness, admin)
    await _drain(harness)

    def entry(n: int) -> Entry:
        payload = (
            b'{"id":%d,"cap":5,"rem":5,"held":0,"conf":0,"state":"open","meta":"","t":1}' % slot_id
        )
        return Entry("test-stream", f"{n}-0", "s", payload)

    async with pool.acquire() as first, pool.acquire() as second:
        tx = first.transaction()
        await tx.start()
        await feed.append(first, [entry(10**12)])

        async def later() -> None:
            async with second.transaction():
                await feed.append(second, [entry(10**12 + 1)])

        task = asyncio.create_task(later())
        await asyncio.sleep(0.3)
        assert not task.done(), "the second writer drew ids while the first was open"
        await tx.commit()
        await asyncio.wait_for(task, 5)
    rows = await pool.fetch(
        "SELECT feed_id, source_id FROM feed WHERE source = 'test-stream' ORDER BY feed_id"
    )
    assert [r["source_id"] for r in rows] == [f"{10**12}-0", f"{10**12 + 1}-0"]


async def test_stream_takes_a_ticket_not_a_token_and_vice_versa(harness: Harness) -> None:
    h = harness
    admin = await new_user(h, admin=True)
    user = await new_user(h)
    assert_problem(await h.client.post("/events/stream/ticket", headers=user.headers), 403)
    r = await h.client.post("/events/stream/ticket", headers=admin.headers)
    assert r.status_code == 200, r.text
    ticket = r.json()["ticket"]
    assert r.json()["expires_in"] == events_routes.TICKET_TTL_S
    # A ticket is no bearer token, and a bearer token is no ticket.
    bearer = {"Authorization": f"Bearer {ticket}"}
    assert_problem(await h.client.get("/events", headers=bearer), 401)
    assert_problem(await h.client.get(f"/events/stream?ticket={admin.token}"), 401)
    assert_problem(await h.client.get("/events/stream?ticket=garbage"), 401)
    claims = jwt.decode(ticket, options={"verify_signature": False})
    expired = jwt.encode(
        {**claims, "exp": claims["iat"] - 10}, h.settings.jwt_secret, algorithm="HS256"
    )
    assert_problem(await h.client.get(f"/events/stream?ticket={expired}"), 401)
    r = await h.client.get("/events/stream?after=x", headers=admin.headers)
    assert_problem(r, 400)
    r = await h.client.get("/events/stream", headers={**admin.headers, "Last-Event-ID": "z"})
    assert_problem(r, 400)


async def test_stream_frames_resume_and_heartbeat(harness: Harness, monkeypatch: Any) -> None:
    """The stream's frames: retry hint, events after the cursor, comment heartbeats."""
    h = harness
    admin = await new_user(h, admin=True)
    await new_slot(h, admin)
    await new_slot(h, admin)
    await _drain(h)
    events = await feed.read(h.ctx.pool)
    monkeypatch.setattr(events_routes, "HEARTBEAT_S", 0.2)
    monkeypatch.setattr(events_routes, "POLL_S", 0.05)
    frames = events_routes._frames(h.ctx, events[0].feed_id, None, [])
    try:
        assert await anext(frames) == b"retry: 1000\n\n"
        frame = await anext(frames)
        assert frame.startswith(b"id: %d\nevent: slot.created\ndata: {" % events[1].feed_id)
        assert await asyncio.wait_for(anext(frames), 2) == b": heartbeat\n\n"
    finally:
        await frames.aclose()


async def test_expiry_is_an_event_too(harness: Harness) -> None:
    h = harness
    admin = await new_user(h, admin=True)
    user = await new_user(h)
    slot_id = await new_slot(h, admin)
    engine = h.ctx.engine
    now_ms = int((await h.ctx.redis.time())[0]) * 1000
    past = now_ms - (h.settings.hold_ttl_s + 5) * 1000
    outcome = await engine.hold(slot_id, str(user.user_id), "expire-me", now_ms=past)
    await engine.sweep(engine.keys.partition_of(slot_id))
    await _drain(h)
    events = await _all(h, admin, f"/events?slot_id={slot_id}&type=hold.*")
    assert [e["type"] for e in events] == ["hold.held", "hold.expired"]
    assert events[1]["data"]["hold_id"] == outcome.hold.hold_id
    assert "expired_at" in events[1]["data"]
