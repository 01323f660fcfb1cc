"""SPEC "HTTP API" / Commands: holds made (idempotently), confirmed, cancelled, expired."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

from .conftest import Harness, Shared
from .support import User, assert_problem, held, make_hold, new_slot, new_user, remaining

HOLD_FIELDS = {"hold_id", "slot_id", "quantity", "status", "created_at", "expires_at"}


@pytest.fixture(scope="module")
async def admin(h: Harness) -> User:
    return await new_user(h, admin=True)


@pytest.fixture
async def user(h: Harness) -> User:
    return await new_user(h)


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _get(h: Harness, user: User, hold_id: str) -> dict[str, Any]:
    r = await h.client.get(f"/holds/{hold_id}", headers=user.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# -- making a hold -------------------------------------------------------------------


async def test_hold_is_201_with_the_hold(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin, capacity=5)
    r = await make_hold(h, user, slot_id, key="first")
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert "idempotent-replayed" not in r.headers
    body = r.json()
    assert set(body) >= HOLD_FIELDS, body
    assert body["slot_id"] == slot_id
    assert body["quantity"] == 1
    assert body["status"] == "held"
    assert isinstance(body["hold_id"], str) and body["hold_id"]
    created, expires = _at(body["created_at"]), _at(body["expires_at"])
    assert created.tzinfo is not None
    assert expires - created == timedelta(seconds=h.settings.hold_ttl_s)
    assert abs(created - datetime.now(created.tzinfo)) < timedelta(seconds=30)
    assert r.headers["location"].endswith(f"/holds/{body['hold_id']}")
    assert await remaining(h, user, slot_id) == 4
    assert await _get(h, user, body["hold_id"]) == body

    three = await make_hold(h, user, slot_id, key="second", quantity=3)
    assert three.status_code == 201, three.text
    assert three.json()["quantity"] == 3
    assert three.json()["hold_id"] != body["hold_id"]
    assert await remaining(h, user, slot_id) == 1


async def test_empty_or_null_body_means_quantity_one(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin, capacity=5)
    for key, content in (("no-body", b""), ("empty-object", b"{}")):
        r = await h.client.post(
            f"/slots/{slot_id}/hold",
            content=content,
            headers={**user.key(key), "Content-Type": "application/json"},
        )
        assert r.status_code == 201, r.text
        assert r.json()["quantity"] == 1
    assert await remaining(h, user, slot_id) == 3


async def test_replay_returns_the_same_hold_in_its_current_state(
    h: Harness, admin: User, user: User
) -> None:
    slot_id = await new_slot(h, admin, capacity=5)
    first = await make_hold(h, user, slot_id, key="again", quantity=2)
    assert first.status_code == 201
    hold = first.json()
    replay = await make_hold(h, user, slot_id, key="again", quantity=2)
    assert replay.status_code == 201, replay.text
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == hold
    assert await remaining(h, user, slot_id) == 3

    confirmed = await h.client.post(f"/holds/{hold['hold_id']}/confirm", headers=user.headers)
    assert confirmed.status_code == 200
    replay = await make_hold(h, user, slot_id, key="again", quantity=2)
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == confirmed.json()
    assert replay.json()["status"] == "confirmed"

    cancelled = await h.client.delete(f"/holds/{hold['hold_id']}", headers=user.headers)
    assert cancelled.status_code == 200
    replay = await make_hold(h, user, slot_id, key="again", quantity=2)
    assert replay.status_code == 201
    assert replay.json() == cancelled.json()
    assert replay.json()["status"] == "cancelled"
    assert await remaining(h, user, slot_id) == 5  # the replay did not take anything


async def test_copies_sent_at_once_make_one_hold(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin, capacity=50)
    copies = await asyncio.gather(
        *(make_hold(h, user, slot_id, key="burst", quantity=2) for _ in range(12))
    )
    assert {r.status_code for r in copies} == {201}
    assert len({r.json()["hold_id"] for r in copies}) == 1
    fresh = [r for r in copies if r.headers.get("idempotent-replayed") != "true"]
    assert len(fresh) == 1
    assert await remaining(h, user, slot_id) == 48


async def test_key_is_scoped_to_user_and_slot(h: Harness, admin: User, user: User) -> None:
    slot_a = await new_slot(h, admin, capacity=5)
    slot_b = await new_slot(h, admin, capacity=5)
    other = await new_user(h)
    ids = set()
    for who, slot_id in ((user, slot_a), (user, slot_b), (other, slot_a)):
        r = await make_hold(h, who, slot_id, key="shared-key")
        assert r.status_code == 201, r.text
        assert "idempotent-replayed" not in r.headers
        ids.add(r.json()["hold_id"])
    assert len(ids) == 3
    assert await remaining(h, user, slot_a) == 3


async def test_same_key_other_quantity_is_422(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin, capacity=5)
    assert (await make_hold(h, user, slot_id, key="q", quantity=1)).status_code == 201
    r = await make_hold(h, user, slot_id, key="q", quantity=2)
    assert_problem(r, 422, "idempotency-mismatch", key_prefix=h.settings.key_prefix)
    assert await remaining(h, user, slot_id) == 4


@pytest.mark.parametrize(
    "key",
    [None, "", "x" * 256, "ключ", "naïve", "tab\there", "bell\x07", "del\x7f"],
    ids=["missing", "empty", "256-chars", "cyrillic", "latin1", "tab", "control", "del"],
)
async def test_missing_or_malformed_key_is_400(
    h: Harness, admin: User, user: User, key: str | None
) -> None:
    slot_id = await new_slot(h, admin, capacity=5)
    headers: dict[str, Any] = dict(user.headers)
    if key is not None:
        headers["Idempotency-Key"] = key.encode()
    r = await h.client.post(f"/slots/{slot_id}/hold", headers=headers)
    assert_problem(r, 400, "invalid-idempotency-key", key_prefix=h.settings.key_prefix)
    assert await remaining(h, user, slot_id) == 5


async def test_longest_and_oddest_valid_keys_are_accepted(
    h: Harness, admin: User, user: User
) -> None:
    slot_id = await new_slot(h, admin, capacity=5)
    for key in ("k" * 255, "x", "a b:c/{p0}*?~!"):
        r = await make_hold(h, user, slot_id, key=key)
        assert r.status_code == 201, (key, r.text)
        again = await make_hold(h, user, slot_id, key=key)
        assert again.headers.get("idempotent-replayed") == "true"
        assert again.json()["hold_id"] == r.json()["hold_id"]


BAD_QUANTITIES: list[Any] = [0, -1, 101, 10**6, 10**30, 1.5, 2.0, "2", True, False, None, [1], {}]


@pytest.mark.parametrize("quantity", BAD_QUANTITIES, ids=[repr(q) for q in BAD_QUANTITIES])
async def test_quantity_must_be_an_integer_in_range(
    h: Harness, admin: User, user: User, quantity: Any
) -> None:
    slot_id = await new_slot(h, admin, capacity=500)
    r = await h.client.post(
        f"/slots/{slot_id}/hold", json={"quantity": quantity}, headers=user.key("kq")
    )
    assert_problem(r, 422, "validation-error", key_prefix=h.settings.key_prefix)
    assert await remaining(h, user, slot_id) == 500
    # The refusal did not bind the key.
    ok = await make_hold(h, user, slot_id, key="kq")
    assert ok.status_code == 201 and "idempotent-replayed" not in ok.headers


@pytest.mark.parametrize(
    "content",
    [
        b"{quantity: 2}",
        b"{",
        b"quantity=2",
        b"\xff\xfe",
        b"[1]",
        b'"2"',
        b"2",
        b'{"quantity": 1, "x": 2}',
    ],
)
async def test_body_that_is_not_a_quantity_object_is_422(
    h: Harness, admin: User, user: User, content: bytes
) -> None:
    slot_id = await new_slot(h, admin, capacity=5)
    r = await h.client.post(
        f"/slots/{slot_id}/hold",
        content=content,
        headers={**user.key("kb"), "Content-Type": "application/json"},
    )
    assert_problem(r, 422, key_prefix=h.settings.key_prefix)
    assert await remaining(h, user, slot_id) == 5


async def test_max_quantity_is_configurable(shared: Shared) -> None:
    h = await shared.make(max_quantity=3, max_held_per_user_slot=100)
    admin = await new_user(h, admin=True)
    user = await new_user(h)
    slot_id = await new_slot(h, admin, capacity=10)
    assert (await make_hold(h, user, slot_id, quantity=3)).status_code == 201
    r = await make_hold(h, user, slot_id, quantity=4)
    body = assert_problem(r, 422, "validation-error")
    assert "3" in body["detail"]


async def test_unknown_slot_is_404(h: Harness, user: User) -> None:
    r = await make_hold(h, user, 99_999_999, key="nowhere")
    assert_problem(r, 404, "not-found", key_prefix=h.settings.key_prefix)


async def test_not_enough_remaining_is_409_with_remaining(
    h: Harness, admin: User, user: User
) -> None:
    slot_id = await new_slot(h, admin, capacity=3)
    first = await held(h, user, slot_id, quantity=2)
    other = await new_user(h)
    r = await make_hold(h, other, slot_id, key="later", quantity=2)
    body = assert_problem(r, 409, "capacity-exhausted", key_prefix=h.settings.key_prefix)
    assert body["remaining"] == 1
    assert await remaining(h, user, slot_id) == 1
    # The refused key is free: once capacity is back the same key makes a hold.
    cancel = await h.client.delete(f"/holds/{first['hold_id']}", headers=user.headers)
    assert cancel.status_code == 200
    retry = await make_hold(h, other, slot_id, key="later", quantity=2)
    assert retry.status_code == 201, retry.text
    assert "idempotent-replayed" not in retry.headers
    assert await remaining(h, user, slot_id) == 1


async def test_zero_capacity_slot_refuses_with_remaining_zero(
    h: Harness, admin: User, user: User
) -> None:
    slot_id = await new_slot(h, admin, capacity=0)
    body = assert_problem(await make_hold(h, user, slot_id), 409, "capacity-exhausted")
    assert body["remaining"] == 0


async def test_held_units_per_user_and_slot_are_capped(shared: Shared) -> None:
    h = await shared.make(max_held_per_user_slot=2)
    admin = await new_user(h, admin=True)
    user = await new_user(h)
    slot_id = await new_slot(h, admin, capacity=20)
    other_slot = await new_slot(h, admin, capacity=20)
    first = await held(h, user, slot_id, quantity=2)
    r = await make_hold(h, user, slot_id, key="one-more")
    body = assert_problem(r, 409, "user-hold-limit", key_prefix=h.settings.key_prefix)
    assert body.get("limit", 2) == 2
    too_big = await make_hold(h, await new_user(h), slot_id, quantity=3)
    assert_problem(too_big, 409, "user-hold-limit")
    # Per slot, per user: elsewhere and for others there is room.
    assert (await make_hold(h, user, other_slot, quantity=2)).status_code == 201
    assert (await make_hold(h, await new_user(h), slot_id, quantity=2)).status_code == 201
    # Only units in `held` count: after confirming, the user may hold again,
    # and the refused key was not bound.
    assert (
        await h.client.post(f"/holds/{first['hold_id']}/confirm", headers=user.headers)
    ).status_code == 200
    again = await make_hold(h, user, slot_id, key="one-more")
    assert again.status_code == 201, again.text
    assert "idempotent-replayed" not in again.headers


async def test_holds_are_rate_limited_per_user(shared: Shared) -> None:
    h = await shared.make(hold_rate_per_minute=3)
    admin = await new_user(h, admin=True)
    user = await new_user(h)
    slots = [await new_slot(h, admin, capacity=50) for _ in range(3)]
    statuses = []
    # Across slots; a minute boundary may pass once, so 7 attempts surely hit the limit.
    for attempt in range(7):
        r = await make_hold(h, user, slots[attempt % 3])
        statuses.append(r.status_code)
        if r.status_code == 429:
            break
    assert statuses[-1] == 429, statuses
    assert set(statuses[:-1]) == {201} and len(statuses) >= 4, statuses
    assert_problem(r, 429, "rate-limited", key_prefix=h.settings.key_prefix)
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # Other users are not affected.
    assert (await make_hold(h, await new_user(h), slots[0])).status_code == 201


async def test_rate_limit_zero_means_off(shared: Shared) -> None:
    h = await shared.make(hold_rate_per_minute=0)
    admin = await new_user(h, admin=True)
    user = await new_user(h)
    slot_id = await new_slot(h, admin, capacity=100)
    statuses = [(await make_hold(h, user, slot_id)).status_code for _ in range(8)]
    assert set(statuses) == {201}


# -- confirm ---------------------------------------------------------------------------


async def test_confirm_is_200_and_idempotent(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin, capacity=4)
    hold = await held(h, user, slot_id, quantity=2)
    r = await h.client.post(f"/holds/{hold['hold_id']}/confirm", headers=user.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "confirmed"
    assert body["hold_id"] == hold["hold_id"] and body["quantity"] == 2
    assert _at(body["confirmed_at"]) >= _at(hold["created_at"])
    again = await h.client.post(f"/holds/{hold['hold_id']}/confirm", headers=user.headers)
    assert again.status_code == 200
    assert again.json() == body
    assert await _get(h, user, hold["hold_id"]) == body
    assert await remaining(h, user, slot_id) == 2


async def test_confirm_or_cancel_an_expired_hold(shared: Shared) -> None:
    h = await shared.make(hold_ttl_s=1)
    admin = await new_user(h, admin=True)
    user = await new_user(h)
    slot_id = await new_slot(h, admin, capacity=5)
    to_confirm = await held(h, user, slot_id, quantity=2)
    to_cancel = await held(h, user, slot_id)
    assert await remaining(h, user, slot_id) == 2
    await asyncio.sleep(1.25)

    r = await h.client.post(f"/holds/{to_confirm['hold_id']}/confirm", headers=user.headers)
    assert_problem(r, 410, "hold-expired", key_prefix=h.settings.key_prefix)
    r = await h.client.delete(f"/holds/{to_cancel['hold_id']}", headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "expired"
    assert "expired_at" in r.json() and "cancelled_at" not in r.json()
    # Deleting the one confirm refused is the same; confirming it stays 410.
    r = await h.client.delete(f"/holds/{to_confirm['hold_id']}", headers=user.headers)
    assert r.status_code == 200 and r.json()["status"] == "expired"
    r = await h.client.post(f"/holds/{to_confirm['hold_id']}/confirm", headers=user.headers)
    assert_problem(r, 410, "hold-expired")
    for hold in (to_confirm, to_cancel):
        assert (await _get(h, user, hold["hold_id"]))["status"] == "expired"
    assert await remaining(h, user, slot_id) == 5


async def test_confirm_a_cancelled_hold_is_409(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin, capacity=4)
    hold = await held(h, user, slot_id)
    assert (
        await h.client.delete(f"/holds/{hold['hold_id']}", headers=user.headers)
    ).status_code == 200
    r = await h.client.post(f"/holds/{hold['hold_id']}/confirm", headers=user.headers)
    assert_problem(r, 409, "hold-cancelled", key_prefix=h.settings.key_prefix)
    assert (await _get(h, user, hold["hold_id"]))["status"] == "cancelled"
    assert await remaining(h, user, slot_id) == 4


# -- cancel ------------------------------------------------------------------------------


async def test_cancel_gives_capacity_back_and_is_idempotent(
    h: Harness, admin: User, user: User
) -> None:
    slot_id = await new_slot(h, admin, capacity=4)
    hold = await held(h, user, slot_id, quantity=3)
    assert await remaining(h, user, slot_id) == 1
    r = await h.client.delete(f"/holds/{hold['hold_id']}", headers=user.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "cancelled" and body["hold_id"] == hold["hold_id"]
    assert "cancelled_at" in body
    assert await remaining(h, user, slot_id) == 4
    again = await h.client.delete(f"/holds/{hold['hold_id']}", headers=user.headers)
    assert again.status_code == 200
    assert again.json() == body
    assert await remaining(h, user, slot_id) == 4


async def test_cancel_a_confirmed_hold_cancels_the_booking(
    h: Harness, admin: User, user: User
) -> None:
    slot_id = await new_slot(h, admin, capacity=2)
    hold = await held(h, user, slot_id, quantity=2)
    confirm = await h.client.post(f"/holds/{hold['hold_id']}/confirm", headers=user.headers)
    assert confirm.status_code == 200
    assert await remaining(h, user, slot_id) == 0
    r = await h.client.delete(f"/holds/{hold['hold_id']}", headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert "confirmed_at" in r.json()
    assert await remaining(h, user, slot_id) == 2


# -- ownership and unknown ids -------------------------------------------------------------


async def test_someone_elses_hold_is_404_but_admins_see_it(
    h: Harness, admin: User, user: User
) -> None:
    slot_id = await new_slot(h, admin, capacity=3)
    hold = await held(h, user, slot_id)
    stranger = await new_user(h)
    unknown_id = f"{slot_id}-0123456789abcdef"
    for method, suffix in (("GET", ""), ("POST", "/confirm"), ("DELETE", "")):
        theirs = await h.client.request(
            method, f"/holds/{hold['hold_id']}{suffix}", headers=stranger.headers
        )
        body = assert_problem(theirs, 404, "not-found", key_prefix=h.settings.key_prefix)
        nothing = await h.client.request(
            method, f"/holds/{unknown_id}{suffix}", headers=stranger.headers
        )
        assert_problem(nothing, 404, "not-found")
        # Indistinguishable from an id that never existed.
        assert body == nothing.json(), (body, nothing.json())
    # Untouched by the stranger's attempts.
    mine = await _get(h, user, hold["hold_id"])
    assert mine == hold
    assert await remaining(h, user, slot_id) == 2
    seen = await h.client.get(f"/holds/{hold['hold_id']}", headers=admin.headers)
    assert seen.status_code == 200, seen.text
    assert seen.json() == hold


MALFORMED_HOLD_IDS = [
    "nope",
    "1",
    "1-",
    "-0123456789abcdef",
    "1-0123456789ABCDEF",
    "1-0123456789abcdeg",
    "1-0123456789abcde",
    "1-0123456789abcdef0",
    "0-0123456789abcdef",
    "9223372036854775808-0123456789abcdef",
    "1" * 40 + "-0123456789abcdef",
    "x" * 5000,
    "%E2%9C%93",
    "1-0123456789abcdef%00",
    "..",
]


@pytest.mark.parametrize("hold_id", MALFORMED_HOLD_IDS, ids=lambda s: s[:24])
async def test_malformed_hold_ids_are_404(h: Harness, user: User, hold_id: str) -> None:
    for method, suffix in (("GET", ""), ("POST", "/confirm"), ("DELETE", "")):
        r = await h.client.request(method, f"/holds/{hold_id}{suffix}", headers=user.headers)
        assert_problem(r, 404, key_prefix=h.settings.key_prefix)
