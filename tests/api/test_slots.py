"""SPEC "HTTP API" / Queries and Administration: availability, one slot, the catalog.

The module shares one database and app; slots other tests made may be listed too,
so listings are checked as properties (order, filters) and by the slots each test made.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from .conftest import Harness, Shared
from .support import User, assert_problem, held, make_hold, new_slot, new_user, next_link, remaining


@pytest.fixture
async def admin(h: Harness) -> User:
    return await new_user(h, admin=True)


@pytest.fixture
async def user(h: Harness) -> User:
    return await new_user(h)


async def _listing(h: Harness, user: User, **params: Any) -> list[dict[str, Any]]:
    r = await h.client.get("/slots/availability", params=params, headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: list[dict[str, Any]] = r.json()
    return body


def _by_id(items: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {item["slot_id"]: item for item in items}


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- availability ------------------------------------------------------------------


async def test_availability_shape_and_order(h: Harness, admin: User, user: User) -> None:
    full = await new_slot(
        h,
        admin,
        capacity=7,
        slot_id=9105,
        label="Gate 3, morning",
        starts_at="2030-05-01T09:00:00+02:00",
        ends_at="2030-05-01T10:00:00+02:00",
    )
    bare = await new_slot(h, admin, capacity=4, slot_id=9103)
    await held(h, user, full, quantity=2)
    items = await _listing(h, user)
    ids = [item["slot_id"] for item in items]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    found = _by_id(items)
    assert found[full]["capacity"] == 7
    assert found[full]["remaining"] == 5
    assert found[full]["state"] == "open"
    assert found[full]["label"] == "Gate 3, morning"
    assert _at(found[full]["starts_at"]) == _at("2030-05-01T07:00:00+00:00")
    assert _at(found[full]["ends_at"]) == _at("2030-05-01T08:00:00+00:00")
    assert {"slot_id", "capacity", "remaining", "state"} <= set(found[bare])
    assert found[bare]["remaining"] == 4
    for name in ("label", "starts_at", "ends_at"):
        assert found[bare].get(name) is None
    # The listing agrees with the one-slot route, which also says who waits.
    one = await h.client.get(f"/slots/{full}", headers=user.headers)
    assert one.json() == {**found[full], "waiting": {"entries": 0, "units": 0}}


async def test_availability_filters(h: Harness, admin: User, user: User) -> None:
    day1 = await new_slot(h, admin, capacity=2, starts_at="2031-03-01T10:00:00Z")
    day2 = await new_slot(h, admin, capacity=2, starts_at="2031-03-02T10:00:00+00:00")
    day3 = await new_slot(h, admin, capacity=2, starts_at="2031-03-03T10:00:00+00:00")
    undated = await new_slot(h, admin, capacity=2)
    empty = await new_slot(h, admin, capacity=0, starts_at="2031-03-02T11:00:00+00:00")
    sold_out = await new_slot(h, admin, capacity=1, starts_at="2031-03-02T12:00:00+00:00")
    await held(h, user, sold_out)

    window = {"from": "2031-03-01T12:00:00+00:00", "to": "2031-03-03T00:00:00+00:00"}
    items = await _listing(h, user, **window)
    ids = {item["slot_id"] for item in items}
    assert {day2, empty, sold_out} <= ids
    assert not ids & {day1, day3, undated}
    for item in items:
        assert _at(window["from"]) <= _at(item["starts_at"]) <= _at(window["to"])

    later = _by_id(await _listing(h, user, **{"from": "2031-03-02T00:00:00+01:00"}))
    assert {day2, day3} <= set(later) and day1 not in later and undated not in later
    earlier = _by_id(await _listing(h, user, to="2031-03-02T00:00:00Z"))
    assert day1 in earlier and not set(earlier) & {day2, day3, undated}

    available = await _listing(h, user, available="true")
    assert all(item["remaining"] > 0 for item in available)
    ids = {item["slot_id"] for item in available}
    assert {day1, day2, day3, undated} <= ids
    assert not ids & {empty, sold_out}

    both = await _listing(h, user, available="true", **window)
    assert day2 in {i["slot_id"] for i in both}
    assert not {i["slot_id"] for i in both} & {empty, sold_out, day1, day3, undated}


@pytest.mark.parametrize(
    "params",
    [
        {"from": "yesterday"},
        {"to": "2031-13-01T00:00:00Z"},
        {"from": "2031-03-01T00:00:00"},  # no offset
        {"available": "maybe"},
        {"limit": "0"},
        {"limit": "-1"},
        {"limit": "abc"},
        {"limit": "10000000000000000000000"},
        {"limit": "\u00b2"},  # a digit to str.isdigit(), not to int()
        {"cursor": "not-a-cursor"},
        {"cursor": "%%%"},
    ],
    ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()),
)
async def test_availability_bad_query_is_400(
    h: Harness, user: User, params: dict[str, str]
) -> None:
    r = await h.client.get("/slots/availability", params=params, headers=user.headers)
    assert_problem(r, 400, key_prefix=h.settings.key_prefix)


async def _walk(h: Harness, user: User, url: str, limit: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    pages = 0
    next_url: str | None = url
    while next_url is not None:
        r = await h.client.get(next_url, headers=user.headers)
        assert r.status_code == 200, r.text
        page = r.json()
        assert 0 < len(page) <= limit or (pages == 0 and not page)
        items.extend(page)
        next_url = next_link(r)
        pages += 1
        assert pages < 1000
        if next_url is not None:
            assert "cursor" in parse_qs(urlsplit(next_url).query)
    return items


async def test_pagination_walks_every_page(h: Harness, admin: User, user: User) -> None:
    for capacity in (0, 1, 2, 3, 0, 5, 6):
        await new_slot(h, admin, capacity=capacity)
    full = await _listing(h, user)
    assert len(full) >= 7
    r = await h.client.get("/slots/availability", params={"limit": 2}, headers=user.headers)
    assert len(r.json()) == 2 and next_link(r) is not None
    assert await _walk(h, user, "/slots/availability?limit=2", 2) == full
    assert await _walk(h, user, "/slots/availability?limit=3", 3) == full
    # A last page that is exactly full carries no next link.
    assert await _walk(h, user, f"/slots/availability?limit={len(full)}", len(full)) == full
    last = await h.client.get(
        "/slots/availability", params={"limit": len(full)}, headers=user.headers
    )
    assert next_link(last) is None
    # Filters survive in the next link.
    filtered = await _listing(h, user, available="true")
    walked = await _walk(h, user, "/slots/availability?available=true&limit=2", 2)
    assert walked == filtered
    assert all(item["remaining"] > 0 for item in walked)


async def test_etag_and_if_none_match(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin, capacity=3)
    r = await h.client.get("/slots/availability", headers=user.headers)
    etag = r.headers["etag"]
    assert etag
    for header in (etag, f"W/{etag}", f'"nope", {etag}'):
        cached = await h.client.get(
            "/slots/availability", headers={**user.headers, "If-None-Match": header}
        )
        assert cached.status_code == 304, (header, cached.text)
        assert cached.content == b""
        assert cached.headers["etag"] == etag
    other = await h.client.get(
        "/slots/availability", headers={**user.headers, "If-None-Match": '"something-else"'}
    )
    assert other.status_code == 200 and other.content == r.content
    # A page has its own validator, honoured the same way.
    page = await h.client.get("/slots/availability", params={"limit": 1}, headers=user.headers)
    page_again = await h.client.get(
        "/slots/availability",
        params={"limit": 1},
        headers={**user.headers, "If-None-Match": page.headers["etag"]},
    )
    assert page_again.status_code == 304
    # Any change gives a new validator and a full answer.
    await held(h, user, slot_id)
    changed = await h.client.get(
        "/slots/availability", headers={**user.headers, "If-None-Match": etag}
    )
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert _by_id(changed.json())[slot_id]["remaining"] == 2


async def test_changes_on_this_node_are_visible_at_once(shared: Shared) -> None:
    # A long staleness bound, so only invalidation can explain a fresh answer.
    h = await shared.make(availability_cache_ms=600_000)
    admin = await new_user(h, admin=True)
    user = await new_user(h)
    slot_id = await new_slot(h, admin, capacity=5)

    async def seen() -> dict[str, Any]:
        return _by_id(await _listing(h, user))[slot_id]

    assert (await seen())["remaining"] == 5
    hold = await held(h, user, slot_id, quantity=2)
    assert (await seen())["remaining"] == 3
    r = await h.client.post(f"/holds/{hold['hold_id']}/confirm", headers=user.headers)
    assert r.status_code == 200
    assert (await seen())["remaining"] == 3
    r = await h.client.delete(f"/holds/{hold['hold_id']}", headers=user.headers)
    assert r.status_code == 200
    assert (await seen())["remaining"] == 5
    r = await h.client.patch(
        f"/slots/{slot_id}", json={"capacity": 8, "label": "bigger"}, headers=admin.headers
    )
    assert r.status_code == 200, r.text
    assert (await seen())["remaining"] == 8
    assert (await seen())["label"] == "bigger"
    another = await new_slot(h, admin, capacity=1)
    assert another in _by_id(await _listing(h, user))


# -- one slot -----------------------------------------------------------------------


async def test_get_one_slot(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin, capacity=6, label="dock 1")
    await held(h, user, slot_id, quantity=2)
    r = await h.client.get(f"/slots/{slot_id}", headers=user.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["slot_id"] == slot_id
    assert body["capacity"] == 6 and body["remaining"] == 4
    assert body["state"] == "open" and body["label"] == "dock 1"
    missing = await h.client.get("/slots/987654321", headers=user.headers)
    assert_problem(missing, 404, "not-found", key_prefix=h.settings.key_prefix)


# -- administration -------------------------------------------------------------------


async def test_create_slot_with_and_without_an_id(h: Harness, admin: User, user: User) -> None:
    r = await h.client.post(
        "/slots",
        json={
            "slot_id": 4242,
            "capacity": 3,
            "label": "L",
            "starts_at": "2032-01-01T08:00:00+00:00",
            "ends_at": "2032-01-01T09:00:00+00:00",
        },
        headers=admin.headers,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["slot_id"] == 4242
    assert body["capacity"] == 3 and body["remaining"] == 3 and body["state"] == "open"
    assert body["label"] == "L"
    assert r.headers["location"].endswith("/slots/4242")

    auto = await h.client.post("/slots", json={"capacity": 2}, headers=admin.headers)
    assert auto.status_code == 201, auto.text
    auto_id = auto.json()["slot_id"]
    assert isinstance(auto_id, int) and auto_id > 0 and auto_id != 4242
    assert (await h.client.get(f"/slots/{auto_id}", headers=user.headers)).status_code == 200

    # An explicit id on the next automatic one does not make the next automatic create fail.
    taken = await h.client.post(
        "/slots", json={"slot_id": auto_id + 1, "capacity": 1}, headers=admin.headers
    )
    assert taken.status_code == 201, taken.text
    following = await h.client.post("/slots", json={"capacity": 1}, headers=admin.headers)
    assert following.status_code == 201, following.text
    assert following.json()["slot_id"] not in (auto_id, auto_id + 1)

    closed = await h.client.post(
        "/slots", json={"capacity": 0, "state": "closed"}, headers=admin.headers
    )
    assert closed.status_code == 201, closed.text
    assert closed.json()["state"] == "closed" and closed.json()["capacity"] == 0


async def test_duplicate_slot_is_409_and_changes_nothing(
    h: Harness, admin: User, user: User
) -> None:
    slot_id = await new_slot(h, admin, capacity=3, slot_id=5151, label="first")
    await held(h, user, slot_id)
    r = await h.client.post(
        "/slots", json={"slot_id": 5151, "capacity": 99, "label": "second"}, headers=admin.headers
    )
    body = assert_problem(r, 409, "slot-exists", key_prefix=h.settings.key_prefix)
    assert "5151" in body["detail"]
    one = (await h.client.get(f"/slots/{slot_id}", headers=user.headers)).json()
    assert (one["capacity"], one["remaining"], one["label"]) == (3, 2, "first")


async def test_create_slot_by_a_user_is_403(h: Harness, user: User) -> None:
    r = await h.client.post("/slots", json={"capacity": 1, "slot_id": 6161}, headers=user.headers)
    assert_problem(r, 403, "forbidden")
    assert_problem(await h.client.get("/slots/6161", headers=user.headers), 404)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"capacity": -1},
        {"capacity": 1.5},
        {"capacity": "3"},
        {"capacity": True},
        {"capacity": 10**12},
        {"capacity": 1, "slot_id": 0},
        {"capacity": 1, "slot_id": -5},
        {"capacity": 1, "slot_id": 2**63},
        {"capacity": 1, "slot_id": "7"},
        {"capacity": 1, "state": "ajar"},
        {"capacity": 1, "label": 5},
        {"capacity": 1, "label": "x" * 10_000},
        {"capacity": 1, "starts_at": "tomorrow"},
        {"capacity": 1, "starts_at": "2032-01-01T08:00:00"},
        {"capacity": 1, "starts_at": 1700000000},
        {
            "capacity": 1,
            "starts_at": "2032-01-01T09:00:00+00:00",
            "ends_at": "2032-01-01T08:00:00+00:00",
        },
        {"capacity": 1, "colour": "red"},
        [],
        "capacity",
        None,
    ],
    ids=lambda b: repr(b)[:40],
)
async def test_create_slot_with_invalid_fields_is_422(
    h: Harness, admin: User, body: object
) -> None:
    r = await h.client.post("/slots", json=body, headers=admin.headers)
    assert_problem(r, 422, key_prefix=h.settings.key_prefix)


async def test_patch_slot(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin, capacity=4, label="before")
    hold = await held(h, user, slot_id, quantity=2)
    r = await h.client.patch(
        f"/slots/{slot_id}", json={"capacity": 6, "label": "after"}, headers=admin.headers
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["capacity"], body["remaining"], body["label"]) == (6, 4, "after")

    r = await h.client.patch(
        f"/slots/{slot_id}",
        json={"starts_at": "2033-01-01T10:00:00+00:00", "ends_at": "2033-01-01T11:00:00+00:00"},
        headers=admin.headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["label"] == "after"  # untouched fields stay
    assert _at(r.json()["starts_at"]) == _at("2033-01-01T10:00:00+00:00")

    # Down to exactly what is held: allowed, nothing left.
    r = await h.client.patch(f"/slots/{slot_id}", json={"capacity": 2}, headers=admin.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["capacity"], r.json()["remaining"]) == (2, 0)
    # Below held + confirmed: refused, nothing changed.
    confirm = await h.client.post(f"/holds/{hold['hold_id']}/confirm", headers=user.headers)
    assert confirm.status_code == 200
    r = await h.client.patch(f"/slots/{slot_id}", json={"capacity": 1}, headers=admin.headers)
    body = assert_problem(r, 409, "capacity-below-committed", key_prefix=h.settings.key_prefix)
    assert body.get("committed", 2) == 2
    now = (await h.client.get(f"/slots/{slot_id}", headers=user.headers)).json()
    assert (now["capacity"], now["remaining"]) == (2, 0)
    # Back up: the room is there again.
    r = await h.client.patch(f"/slots/{slot_id}", json={"capacity": 3}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["remaining"] == 1


async def test_patch_state_closes_and_reopens(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin, capacity=4)
    before = await held(h, user, slot_id)
    r = await h.client.patch(f"/slots/{slot_id}", json={"state": "closed"}, headers=admin.headers)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "closed"
    refused = await make_hold(h, user, slot_id, key="k-closed")
    assert_problem(refused, 409, "slot-closed", key_prefix=h.settings.key_prefix)
    assert await remaining(h, user, slot_id) == 3
    # Closing stops new holds only: one made before still confirms.
    confirm = await h.client.post(f"/holds/{before['hold_id']}/confirm", headers=user.headers)
    assert confirm.status_code == 200, confirm.text
    r = await h.client.patch(f"/slots/{slot_id}", json={"state": "open"}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["state"] == "open"
    # The refusal did not bind the key.
    again = await make_hold(h, user, slot_id, key="k-closed")
    assert again.status_code == 201, again.text
    assert "idempotent-replayed" not in again.headers


async def test_slot_created_closed_refuses_holds(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin, capacity=4, state="closed")
    r = await make_hold(h, user, slot_id)
    assert_problem(r, 409, "slot-closed")


async def test_patch_unknown_slot_is_404(h: Harness, admin: User) -> None:
    r = await h.client.patch("/slots/876543210", json={"capacity": 1}, headers=admin.headers)
    assert_problem(r, 404, "not-found", key_prefix=h.settings.key_prefix)


async def test_patch_by_a_user_is_403(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin, capacity=2)
    r = await h.client.patch(f"/slots/{slot_id}", json={"capacity": 100}, headers=user.headers)
    assert_problem(r, 403, "forbidden")
    assert await remaining(h, user, slot_id) == 2


@pytest.mark.parametrize(
    "body",
    [
        {"capacity": -1},
        {"capacity": "9"},
        {"state": "gone"},
        {"slot_id": 77},
        {"label": ["x"]},
        {"ends_at": "2000-01-01T00:00:00+00:00", "starts_at": "2001-01-01T00:00:00+00:00"},
        [],
    ],
    ids=lambda b: repr(b)[:40],
)
async def test_patch_with_invalid_fields_is_422(h: Harness, admin: User, body: object) -> None:
    slot_id = await new_slot(h, admin, capacity=2)
    r = await h.client.patch(f"/slots/{slot_id}", json=body, headers=admin.headers)
    assert_problem(r, 422, key_prefix=h.settings.key_prefix)
