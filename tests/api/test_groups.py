"""SPEC "Hold lifecycle, groups and batches" / hold groups over HTTP: every status code."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from sync import feed

from .conftest import Harness
from .support import User, assert_problem, held, new_slot, new_user, remaining


@pytest.fixture(scope="module")
async def admin(h: Harness) -> User:
    return await new_user(h, admin=True)


@pytest.fixture
async def user(h: Harness) -> User:
    return await new_user(h)


async def _group(h: Harness, user: User, items: Any, key: str | None = None, **body: Any) -> Any:
    return await h.client.post(
        "/holds", json={"items": items, **body}, headers=user.key(key or uuid.uuid4().hex)
    )


async def test_group_is_201_then_replayed(h: Harness, admin: User, user: User) -> None:
    a, b = await new_slot(h, admin, 5), await new_slot(h, admin, 5)
    items = [{"slot_id": a, "quantity": 2}, {"slot_id": b}]
    r = await _group(h, user, items, key="g1", mode="all")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "held" and body["group_id"].startswith("g")
    assert r.headers["location"] == f"/holds/groups/{body['group_id']}"
    assert [(x["slot_id"], x["quantity"], x["status"]) for x in body["holds"]] == [
        (a, 2, "held"),
        (b, 1, "held"),
    ]
    assert {x["expires_at"] for x in body["holds"]} == {body["expires_at"]}
    assert await remaining(h, user, a) == 3 and await remaining(h, user, b) == 4
    again = await _group(h, user, items, key="g1")
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["group_id"] == body["group_id"]
    assert await remaining(h, user, a) == 3
    other = await _group(h, user, [{"slot_id": a}], key="g1")
    assert assert_problem(other, 422, "idempotency-mismatch")["group_id"] == body["group_id"]
    # GET: the owner and admins; anyone else 404.
    url = f"/holds/groups/{body['group_id']}"
    assert (await h.client.get(url, headers=user.headers)).json() == body
    assert (await h.client.get(url, headers=admin.headers)).status_code == 200
    stranger = await new_user(h)
    assert_problem(await h.client.get(url, headers=stranger.headers), 404, "not-found")
    assert_problem(await h.client.delete(url, headers=stranger.headers), 404, "not-found")
    assert_problem(await h.client.get("/holds/groups/nope", headers=user.headers), 404)
    assert_problem(await h.client.get(url), 401)


async def test_refused_item_holds_nothing(h: Harness, admin: User, user: User) -> None:
    a, b = await new_slot(h, admin, 5), await new_slot(h, admin, 1)
    r = await _group(h, user, [{"slot_id": a, "quantity": 2}, {"slot_id": b, "quantity": 2}])
    body = assert_problem(r, 409, "group-refused")
    assert body["item"] == {"index": 1, "slot_id": b}
    assert body["reason"] == "capacity-exhausted" and body["remaining"] == 1
    assert await remaining(h, user, a) == 5 and await remaining(h, user, b) == 1
    closed = await new_slot(h, admin, 5, state="closed")
    body = assert_problem(await _group(h, user, [{"slot_id": a}, {"slot_id": closed}]), 409)
    assert body["reason"] == "slot-closed" and body["item"]["index"] == 1
    body = assert_problem(await _group(h, user, [{"slot_id": 10**15}, {"slot_id": a}]), 409)
    assert body["reason"] == "not-found" and body["item"] == {"index": 0, "slot_id": 10**15}
    big = await new_slot(h, admin, 50)
    body = assert_problem(await _group(h, user, [{"slot_id": big, "quantity": 11}]), 409)
    assert body["reason"] == "user-hold-limit"
    assert await remaining(h, user, a) == 5


@pytest.mark.parametrize(
    "body",
    [
        {"items": []},
        {"items": [{"slot_id": 1}] * 2},
        {"items": [{"slot_id": n} for n in range(1, 12)]},
        {"items": [{"slot_id": 1}], "mode": "any"},
        {"items": [{"slot_id": 0}]},
        {"items": [{"slot_id": 1, "quantity": 0}]},
        {"items": [{"slot_id": "1"}]},
        {"items": [{"slot_id": 1, "extra": 1}]},
        {"items": [1]},
        {"items": {"slot_id": 1}},
        {"other": 1},
        [],
    ],
)
async def test_bad_bodies_are_422(h: Harness, user: User, body: Any) -> None:
    r = await h.client.post("/holds", json=body, headers=user.key(uuid.uuid4().hex))
    assert_problem(r, 422, "validation-error")


async def test_key_is_required(h: Harness, user: User) -> None:
    r = await h.client.post("/holds", json={"items": [{"slot_id": 1}]}, headers=user.headers)
    assert_problem(r, 400, "invalid-idempotency-key")


async def test_confirm_cancel_and_members(h: Harness, admin: User, user: User) -> None:
    a, b = await new_slot(h, admin, 5), await new_slot(h, admin, 5)
    body = (await _group(h, user, [{"slot_id": a}, {"slot_id": b, "quantity": 3}])).json()
    url = f"/holds/groups/{body['group_id']}"
    member = body["holds"][0]["hold_id"]
    # A member changes only with its group; it reads like any hold.
    r = await h.client.post(f"/holds/{member}/confirm", headers=user.headers)
    assert assert_problem(r, 409, "group-member")["group_id"] == body["group_id"]
    assert_problem(await h.client.delete(f"/holds/{member}", headers=user.headers), 409)
    assert (await h.client.get(f"/holds/{member}", headers=user.headers)).status_code == 200
    r = await h.client.post(f"{url}/confirm", headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "confirmed" and "confirmed_at" in r.json()
    assert {x["status"] for x in r.json()["holds"]} == {"confirmed"}
    assert (await h.client.post(f"{url}/confirm", headers=user.headers)).status_code == 200
    r = await h.client.delete(url, headers=user.headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert (await h.client.delete(url, headers=user.headers)).json()["status"] == "cancelled"
    assert await remaining(h, user, a) == 5 and await remaining(h, user, b) == 5
    assert_problem(await h.client.post(f"{url}/confirm", headers=user.headers), 409)
    # A single hold is untouched by all this.
    single = await held(h, user, a)
    r = await h.client.post(f"/holds/{single['hold_id']}/confirm", headers=user.headers)
    assert r.status_code == 200


async def test_expired_group_is_410_on_confirm(make_harness: Any) -> None:
    h = await make_harness(hold_ttl_s=1, group_pending_ms=100)
    try:
        admin, user = await new_user(h, admin=True), await new_user(h)
        a = await new_slot(h, admin, 5)
        body = (await _group(h, user, [{"slot_id": a}])).json()
        url = f"/holds/groups/{body['group_id']}"
        await asyncio.sleep(1.1)
        assert_problem(await h.client.post(f"{url}/confirm", headers=user.headers), 410)
        assert (await h.client.get(url, headers=user.headers)).json()["status"] == "expired"
        assert await remaining(h, user, a) == 5
        r = await h.client.delete(url, headers=user.headers)
        assert r.status_code == 200 and r.json()["status"] == "expired"
    finally:
        await h.close()


async def test_group_events_reach_the_feed(make_harness: Any) -> None:
    h = await make_harness()
    try:
        from sync.drain import drain_all

        admin, user = await new_user(h, admin=True), await new_user(h)
        a, b = await new_slot(h, admin, 5), await new_slot(h, admin, 5)
        body = (await _group(h, user, [{"slot_id": a}, {"slot_id": b}])).json()
        url = f"/holds/groups/{body['group_id']}"
        await h.client.post(f"{url}/confirm", headers=user.headers)
        await h.client.delete(url, headers=user.headers)
        await drain_all(h.ctx.engine, h.ctx.redis, h.ctx.pool)
        events = await feed.read(
            h.ctx.pool, types=["group.held", "group.confirmed", "group.cancelled"]
        )
        assert [e.type for e in events] == ["group.held", "group.confirmed", "group.cancelled"]
        assert {e.slot_id for e in events} == {None}
        assert [m["slot_id"] for m in events[0].data["members"]] == [a, b]
        rows = await h.ctx.pool.fetch("SELECT status FROM group_events ORDER BY event_id")
        assert [r["status"] for r in rows] == ["held", "confirmed", "cancelled"]
        members = await h.ctx.pool.fetch(
            "SELECT status FROM holds WHERE hold_id = ANY($1::text[])",
            [x["hold_id"] for x in body["holds"]],
        )
        assert {r["status"] for r in members} == {"cancelled"}
        metrics = (await h.client.get("/metrics", headers=admin.headers)).text
        assert 'slotkeeper_groups_total{command="hold",outcome="created"} 1.0' in metrics
    finally:
        await h.close()


async def test_group_confirm_and_cancel_are_in_postgres_when_answered(
    h: Harness, admin: User, user: User
) -> None:
    """No worker runs here: what PostgreSQL has was written by the group's confirm."""
    a, b = await new_slot(h, admin, 5), await new_slot(h, admin, 5)
    body = (await _group(h, user, [{"slot_id": a, "quantity": 2}, {"slot_id": b}])).json()
    ids = [m["hold_id"] for m in body["holds"]]
    url = f"/holds/groups/{body['group_id']}"

    async def stored() -> list[tuple[str, int]]:
        rows = await h.ctx.pool.fetch(
            "SELECT status, quantity FROM holds WHERE hold_id = ANY($1::text[]) ORDER BY slot_id",
            ids,
        )
        return [(r["status"], r["quantity"]) for r in rows]

    async def confirmed_in_pg() -> list[int]:
        rows = await h.ctx.pool.fetch(
            "SELECT confirmed FROM slots WHERE slot_id = ANY($1::bigint[]) ORDER BY slot_id",
            [a, b],
        )
        return [r["confirmed"] for r in rows]

    assert (await h.client.post(f"{url}/confirm", headers=user.headers)).status_code == 200
    assert await stored() == [("confirmed", 2), ("confirmed", 1)]
    assert await confirmed_in_pg() == [2, 1]
    assert (await h.client.delete(url, headers=user.headers)).status_code == 200
    assert await stored() == [("cancelled", 2), ("cancelled", 1)]
    assert await confirmed_in_pg() == [0, 0]
