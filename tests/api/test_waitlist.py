"""SPEC "Waitlist" over HTTP: join (idempotent), position, offers, leave, every status code."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from .conftest import Harness
from .support import User, assert_problem, held, new_slot, new_user


@pytest.fixture(scope="module")
async def admin(h: Harness) -> User:
    return await new_user(h, admin=True)


async def _join(
    h: Harness, user: User, slot_id: int, key: str | None = None, body: Any = None
) -> httpx.Response:
    return await h.client.post(
        f"/slots/{slot_id}/waitlist",
        json={"quantity": 1} if body is None else body,
        headers=user.key(key or uuid.uuid4().hex),
    )


async def _entry(h: Harness, user: User, entry_id: str) -> dict[str, Any]:
    r = await h.client.get(f"/waitlist/{entry_id}", headers=user.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _sold_out(
    h: Harness, admin: User, capacity: int = 1
) -> tuple[int, list[tuple[User, str]]]:
    """A slot whose capacity is all held: (slot, [(holder, hold id)])."""
    slot_id = await new_slot(h, admin, capacity=capacity)
    holds = []
    for _ in range(capacity):
        holder = await new_user(h)
        holds.append((holder, (await held(h, holder, slot_id))["hold_id"]))
    return slot_id, holds


async def test_join_waits_in_line_with_its_position(h: Harness, admin: User) -> None:
    slot_id, _ = await _sold_out(h, admin)
    first, second = await new_user(h), await new_user(h)
    r = await _join(h, first, slot_id, key="a", body={"quantity": 1})
    assert r.status_code == 201, r.text
    body = r.json()
    assert {k: body[k] for k in ("slot_id", "quantity", "status", "position")} == {
        "slot_id": slot_id,
        "quantity": 1,
        "status": "waiting",
        "position": 1,
    }
    assert r.headers["location"].endswith(f"/waitlist/{body['entry_id']}")
    r2 = await _join(h, second, slot_id)
    assert r2.status_code == 201 and r2.json()["position"] == 2
    assert (await _entry(h, first, body["entry_id"]))["position"] == 1
    slot = (await h.client.get(f"/slots/{slot_id}", headers=first.headers)).json()
    assert slot["waiting"] == {"entries": 2, "units": 2}

    # Same key: the same entry, marked as a replay; another quantity: 422.
    again = await _join(h, first, slot_id, key="a")
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["entry_id"] == body["entry_id"]
    assert_problem(await _join(h, first, slot_id, key="a", body={"quantity": 2}), 422)
    # A second waiting entry for the same user and slot: 409.
    assert_problem(await _join(h, first, slot_id, key="b"), 409, "waiting-limit")


async def test_a_cancelled_hold_is_offered_to_the_head(h: Harness, admin: User) -> None:
    slot_id, holds = await _sold_out(h, admin)
    user = await new_user(h)
    entry = (await _join(h, user, slot_id)).json()
    # A newcomer cannot take the place of the line.
    newcomer = await new_user(h)
    holder, hold_id = holds[0]
    r = await h.client.delete(f"/holds/{hold_id}", headers=holder.headers)
    assert r.status_code == 200, r.text
    offered = await _entry(h, user, entry["entry_id"])
    assert offered["status"] == "offered" and "position" not in offered
    assert offered["hold"]["status"] == "held" and offered["hold_id"] == offered["hold"]["hold_id"]
    r = await h.client.post(f"/holds/{offered['hold_id']}/confirm", headers=user.headers)
    assert r.status_code == 200 and r.json()["status"] == "confirmed"
    assert (await _entry(h, user, entry["entry_id"]))["hold"]["status"] == "confirmed"
    r = await h.client.post(
        f"/slots/{slot_id}/hold", json={"quantity": 1}, headers=newcomer.key("x")
    )
    assert_problem(r, 409, "capacity-exhausted")


async def test_join_with_room_is_offered_at_once(h: Harness, admin: User) -> None:
    slot_id = await new_slot(h, admin, capacity=3)
    user = await new_user(h)
    r = await _join(h, user, slot_id, body={"quantity": 2})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "offered" and r.json()["hold"]["quantity"] == 2


async def test_leave_is_idempotent_and_others_see_404(h: Harness, admin: User) -> None:
    slot_id, _ = await _sold_out(h, admin)
    user, other = await new_user(h), await new_user(h)
    entry_id = (await _join(h, user, slot_id)).json()["entry_id"]
    assert_problem(await h.client.get(f"/waitlist/{entry_id}", headers=other.headers), 404)
    assert_problem(await h.client.delete(f"/waitlist/{entry_id}", headers=other.headers), 404)
    assert (await _entry(h, admin, entry_id))["status"] == "waiting"
    for _ in range(2):
        r = await h.client.delete(f"/waitlist/{entry_id}", headers=user.headers)
        assert r.status_code == 200 and r.json()["status"] == "left", r.text
    assert (await _entry(h, user, entry_id))["status"] == "left"
    slot = (await h.client.get(f"/slots/{slot_id}", headers=user.headers)).json()
    assert slot["waiting"] == {"entries": 0, "units": 0}
    # Leaving freed the user's place: they may join again.
    assert (await _join(h, user, slot_id)).status_code == 201


async def test_bad_requests(h: Harness, admin: User) -> None:
    user = await new_user(h)
    slot_id = await new_slot(h, admin, capacity=1)
    assert_problem(await _join(h, user, 999_999_999), 404, "not-found")
    assert_problem(await _join(h, user, slot_id, body={"quantity": 0}), 422, "validation-error")
    top = h.settings.max_quantity + 1
    assert_problem(await _join(h, user, slot_id, body={"quantity": top}), 422)
    assert_problem(await _join(h, user, slot_id, body={"n": 1}), 422)
    assert_problem(await _join(h, user, slot_id, body=[1]), 422)
    r = await h.client.post(
        f"/slots/{slot_id}/waitlist", json={"quantity": 1}, headers=user.headers
    )
    assert_problem(r, 400, "invalid-idempotency-key")
    r = await h.client.post(f"/slots/{slot_id}/waitlist", json={"quantity": 1})
    assert_problem(r, 401)
    assert_problem(await _join(h, user, 0), 400, "bad-request")
    for entry_id in ("nope", f"{slot_id}-0123456789abcdef", "1-XYZ"):
        assert_problem(await h.client.get(f"/waitlist/{entry_id}", headers=user.headers), 404)
        assert_problem(await h.client.delete(f"/waitlist/{entry_id}", headers=user.headers), 404)
    assert_problem(await h.client.get(f"/waitlist/{slot_id}-0123456789abcdef"), 401)
    closed = await new_slot(h, admin, capacity=1, state="closed")
    assert_problem(await _join(h, user, closed), 409, "slot-closed")


async def test_metrics_count_the_waitlist(h: Harness) -> None:
    text = (await h.client.get("/metrics")).text
    for name in ("waiting", "offers_made", "offers_taken", "offers_lapsed"):
        assert f'slotkeeper_waitlist{{count="{name}"}}' in text, text
    assert "slotkeeper_waitlist_joins_total" in text
