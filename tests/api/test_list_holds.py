"""GET /holds: the caller's holds, newest first, paginated, from PostgreSQL (the sync
worker's copy, filled here by ``sync.drain.drain_all``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .conftest import Harness
from .support import User, assert_problem, held, new_slot, new_user, next_link


async def _drain(h: Harness) -> int:
    from sync.drain import drain_all  # the worker's code path; imported here on purpose

    return await drain_all(h.ctx.engine, h.ctx.redis, h.ctx.pool)


async def _list(h: Harness, user: User, url: str = "/holds") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url is not None:
        r = await h.client.get(next_url, headers=user.headers)
        assert r.status_code == 200, r.text
        items.extend(r.json())
        next_url = next_link(r)
        assert len(items) < 10_000
    return items


async def test_list_holds_newest_first_and_paginated(h: Harness) -> None:
    admin = await new_user(h, admin=True)
    user = await new_user(h)
    other = await new_user(h)
    slot_a = await new_slot(h, admin, capacity=10)
    slot_b = await new_slot(h, admin, capacity=10)
    made = []
    for slot_id in (slot_a, slot_b, slot_a, slot_b, slot_a):
        made.append(await held(h, user, slot_id))
        await asyncio.sleep(0.005)  # distinct created_at, so "newest first" is one order
    theirs = await held(h, other, slot_a)
    confirmed = await h.client.post(f"/holds/{made[1]['hold_id']}/confirm", headers=user.headers)
    cancelled = await h.client.delete(f"/holds/{made[3]['hold_id']}", headers=user.headers)
    assert confirmed.status_code == 200 and cancelled.status_code == 200

    written = await _drain(h)
    assert written >= len(made) + 1 + 2  # six holds made, one confirm, one cancel

    r = await h.client.get("/holds", headers=user.headers)
    assert r.status_code == 200, r.text
    listed = r.json()
    assert [x["hold_id"] for x in listed] == [x["hold_id"] for x in reversed(made)]
    assert theirs["hold_id"] not in {x["hold_id"] for x in listed}
    by_id = {x["hold_id"]: x for x in listed}
    assert by_id[made[1]["hold_id"]] == confirmed.json()
    assert by_id[made[3]["hold_id"]] == cancelled.json()
    for hold in (made[0], made[2], made[4]):
        assert by_id[hold["hold_id"]] == hold

    first = await h.client.get("/holds", params={"limit": 2}, headers=user.headers)
    assert len(first.json()) == 2 and next_link(first) is not None
    assert await _list(h, user, "/holds?limit=2") == listed
    assert await _list(h, user, "/holds?limit=1") == listed
    exact = await h.client.get("/holds", params={"limit": len(made)}, headers=user.headers)
    assert exact.json() == listed and next_link(exact) is None

    mine = await h.client.get("/holds", headers=other.headers)
    assert [x["hold_id"] for x in mine.json()] == [theirs["hold_id"]]


async def test_list_holds_of_a_new_user_is_empty(h: Harness) -> None:
    user = await new_user(h)
    r = await h.client.get("/holds", headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json() == []
    assert next_link(r) is None


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "-3"},
        {"limit": "many"},
        {"limit": "100000"},
        {"limit": "\u00b2"},  # a digit to str.isdigit(), not to int()
        {"cursor": "garbage"},
        {"cursor": "!!!"},
    ],
    ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()),
)
async def test_list_holds_bad_query_is_400(h: Harness, params: dict[str, str]) -> None:
    user = await new_user(h)
    r = await h.client.get("/holds", params=params, headers=user.headers)
    assert r.status_code < 500, r.text
    assert_problem(r, 400, key_prefix=h.settings.key_prefix)


async def test_list_holds_needs_a_token(h: Harness) -> None:
    assert_problem(await h.client.get("/holds"), 401)
