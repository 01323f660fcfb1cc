"""SPEC "Hold lifecycle": extend (POST /holds/{id}/extend) and partial confirm over HTTP."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from .conftest import Harness, Shared
from .support import User, assert_problem, held, new_slot, new_user, remaining


@pytest.fixture(scope="module")
async def admin(h: Harness) -> User:
    return await new_user(h, admin=True)


@pytest.fixture
async def user(h: Harness) -> User:
    return await new_user(h)


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _metric(h: Harness, action: str, outcome: str) -> float:
    value = h.ctx.metrics.registry.get_sample_value(
        "slotkeeper_hold_changes_total", {"action": action, "outcome": outcome}
    )
    return value or 0.0


# -- extend --------------------------------------------------------------------------


async def test_extend_is_200_with_a_fresh_lifetime(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin, capacity=5)
    hold = await held(h, user, slot_id, quantity=2)
    before = await _metric(h, "extend", "extended")
    await asyncio.sleep(0.01)

    r = await h.client.post(f"/holds/{hold['hold_id']}/extend", headers=user.headers)

    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["quantity"], body["extensions"]) == ("held", 2, 1)
    assert body["created_at"] == hold["created_at"]
    new_expiry = _at(body["expires_at"])
    assert new_expiry > _at(hold["expires_at"])
    assert new_expiry - datetime.now(new_expiry.tzinfo) <= timedelta(seconds=h.settings.hold_ttl_s)
    got = await h.client.get(f"/holds/{hold['hold_id']}", headers=user.headers)
    assert got.json() == body
    assert await remaining(h, user, slot_id) == 3
    assert await _metric(h, "extend", "extended") == before + 1


async def test_extend_limit_is_409(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin, capacity=5)
    hold = await held(h, user, slot_id)
    url = f"/holds/{hold['hold_id']}/extend"
    for n in range(h.settings.hold_max_extensions):
        r = await h.client.post(url, headers=user.headers)
        assert r.status_code == 200 and r.json()["extensions"] == n + 1, r.text

    r = await h.client.post(url, headers=user.headers)

    body = assert_problem(r, 409, "extension-limit", key_prefix=h.settings.key_prefix)
    assert body["extensions"] == h.settings.hold_max_extensions
    latest = _at(body["latest_expires_at"])
    assert latest - _at(hold["created_at"]) == timedelta(seconds=h.settings.hold_max_lifetime_s)


async def test_extend_past_the_longest_life_is_409(shared: Shared) -> None:
    h = await shared.make(hold_ttl_s=60, hold_max_lifetime_s=30)
    admin, user = await new_user(h, admin=True), await new_user(h)
    hold = await held(h, user, await new_slot(h, admin))
    r = await h.client.post(f"/holds/{hold['hold_id']}/extend", headers=user.headers)
    assert_problem(r, 409, "extension-limit")


async def test_extend_someone_elses_or_unknown_hold_is_404(
    h: Harness, admin: User, user: User
) -> None:
    hold = await held(h, user, await new_slot(h, admin))
    other = await new_user(h)
    for hold_id in (hold["hold_id"], "1-nosuchhold", "junk"):
        r = await h.client.post(f"/holds/{hold_id}/extend", headers=other.headers)
        assert_problem(r, 404, "not-found")
    r = await h.client.post(f"/holds/{hold['hold_id']}/extend")
    assert_problem(r, 401)


async def test_extend_confirmed_or_cancelled_is_409(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin)
    confirmed, cancelled = await held(h, user, slot_id), await held(h, user, slot_id)
    await h.client.post(f"/holds/{confirmed['hold_id']}/confirm", headers=user.headers)
    await h.client.delete(f"/holds/{cancelled['hold_id']}", headers=user.headers)

    r = await h.client.post(f"/holds/{confirmed['hold_id']}/extend", headers=user.headers)
    assert_problem(r, 409, "hold-confirmed")
    r = await h.client.post(f"/holds/{cancelled['hold_id']}/extend", headers=user.headers)
    assert_problem(r, 409, "hold-cancelled")


async def test_extend_an_expired_hold_is_410(shared: Shared) -> None:
    h = await shared.make(hold_ttl_s=1)
    admin, user = await new_user(h, admin=True), await new_user(h)
    hold = await held(h, user, await new_slot(h, admin))
    await asyncio.sleep(1.25)
    r = await h.client.post(f"/holds/{hold['hold_id']}/extend", headers=user.headers)
    assert_problem(r, 410, "hold-expired")


# -- partial confirm -----------------------------------------------------------------


async def test_partial_confirm_gives_the_rest_back(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin, capacity=10)
    hold = await held(h, user, slot_id, quantity=4)
    url = f"/holds/{hold['hold_id']}/confirm"

    r = await h.client.post(url, json={"quantity": 3}, headers=user.headers)

    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["quantity"]) == ("confirmed", 3)
    assert await remaining(h, user, slot_id) == 7
    # Replays: the same quantity, or no body, answer the same; another is 409.
    for payload in ({"quantity": 3}, None, {}):
        again = await h.client.post(url, json=payload, headers=user.headers)
        assert again.status_code == 200 and again.json() == body, again.text
    r = await h.client.post(url, json={"quantity": 4}, headers=user.headers)
    problem = assert_problem(r, 409, "confirm-mismatch")
    assert problem["quantity"] == 3
    assert await remaining(h, user, slot_id) == 7


async def test_partial_confirm_body_is_validated(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin, capacity=10)
    hold = await held(h, user, slot_id, quantity=2)
    url = f"/holds/{hold['hold_id']}/confirm"
    for payload in ({"quantity": 0}, {"quantity": "2"}, {"quantity": True}, [], {"q": 1}):
        r = await h.client.post(url, json=payload, headers=user.headers)
        assert_problem(r, 422, "validation-error")
    r = await h.client.post(
        url, content=b"{", headers={**user.headers, "content-type": "application/json"}
    )
    assert_problem(r, 422, "validation-error")
    # More than the hold has: 422, and nothing changed.
    r = await h.client.post(url, json={"quantity": 3}, headers=user.headers)
    assert assert_problem(r, 422, "validation-error")["held"] == 2
    assert await remaining(h, user, slot_id) == 8
    r = await h.client.post(url, json={"quantity": 2}, headers=user.headers)
    assert r.status_code == 200 and r.json()["quantity"] == 2
