"""SPEC "Batches": POST /holds/batch, one result per item, in order, each its own hold."""

from __future__ import annotations

from typing import Any

import pytest

import engine.coalesce

from .conftest import Harness, Shared
from .support import User, assert_problem, new_slot, new_user, remaining


@pytest.fixture(scope="module")
async def admin(h: Harness) -> User:
    return await new_user(h, admin=True)


@pytest.fixture
async def user(h: Harness) -> User:
    return await new_user(h)


async def _batch(h: Harness, who: User, items: Any) -> Any:
    return await h.client.post("/holds/batch", json={"items": items}, headers=who.headers)


def _statuses(body: dict[str, Any]) -> list[int]:
    return [r["status"] for r in body["results"]]


async def test_100_items_with_mixed_outcomes_answer_in_order(
    h: Harness, admin: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    roomy = await new_slot(h, admin, capacity=1000)
    small = await new_slot(h, admin, capacity=3)
    closed = await new_slot(h, admin, capacity=5, state="closed")
    end_users = [await new_user(h) for _ in range(10)]
    items: list[dict[str, Any]] = []
    expected: list[int] = []
    for n in range(100):
        who = int(end_users[n % 10].user_id)
        match n % 5:
            case 0 | 1:
                items.append({"slot_id": roomy, "idempotency_key": f"k{n}", "user_id": who})
                expected.append(201)
            case 2:  # the first three fit, the rest find it full
                items.append({"slot_id": small, "idempotency_key": f"k{n}", "user_id": who})
                expected.append(201 if n < 15 else 409)
            case 3:
                items.append({"slot_id": closed, "idempotency_key": f"k{n}", "user_id": who})
                expected.append(409)
            case _:
                items.append({"slot_id": 999_999_999, "idempotency_key": f"k{n}"})
                expected.append(404)
    items[99] = {"slot_id": roomy, "quantity": 0, "idempotency_key": "bad"}
    expected[99] = 422
    sends = []
    real_send = engine.coalesce.Coalescer._send

    async def counting_send(self: Any, batch: list[Any]) -> None:
        sends.append(len(batch))
        await real_send(self, batch)

    monkeypatch.setattr(engine.coalesce.Coalescer, "_send", counting_send)

    r = await _batch(h, admin, items)

    assert r.status_code == 200, r.text
    body = r.json()
    assert _statuses(body) == expected
    # One script call per partition the valid items touch, all in one pipeline.
    partitions = {
        h.ctx.engine.keys.partition_of(i["slot_id"])
        for i, want in zip(items, expected, strict=True)
        if want != 422
    }
    assert sends == [len(partitions)]
    for item, result in zip(items, body["results"], strict=True):
        if result["status"] == 201:
            hold = result["hold"]
            assert hold["slot_id"] == item["slot_id"] and "replayed" not in result
            assert hold["user_id"] == item.get("user_id", int(admin.user_id))
        else:
            assert result["problem"]["status"] == result["status"]
    slugs = {r["problem"]["type"].rsplit("/", 1)[1] for r in body["results"] if "problem" in r}
    assert slugs == {"capacity-exhausted", "slot-closed", "not-found", "validation-error"}
    assert await remaining(h, admin, roomy) == 1000 - 40
    assert await remaining(h, admin, small) == 0

    # The same batch again replays each item: the same holds, marked replayed.
    again = (await _batch(h, admin, items)).json()
    assert _statuses(again) == expected
    for first, second in zip(body["results"], again["results"], strict=True):
        if first["status"] == 201:
            assert second["hold"] == first["hold"] and second["replayed"] is True
    assert await remaining(h, admin, roomy) == 1000 - 40


async def test_a_single_hold_replays_a_batch_item(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin, capacity=5)
    r = await _batch(h, user, [{"slot_id": slot_id, "quantity": 2, "idempotency_key": "same"}])
    hold = r.json()["results"][0]["hold"]
    single = await h.client.post(
        f"/slots/{slot_id}/hold", json={"quantity": 2}, headers=user.key("same")
    )
    assert single.status_code == 201 and single.headers["idempotent-replayed"] == "true"
    assert single.json() == hold
    # The key with another quantity is the item's 422, as for a single hold.
    r = await _batch(h, user, [{"slot_id": slot_id, "quantity": 1, "idempotency_key": "same"}])
    assert r.json()["results"][0]["problem"]["type"].endswith("idempotency-mismatch")


async def test_per_user_cap_and_rate_limit_apply_per_item(shared: Shared) -> None:
    h = await shared.make(hold_rate_per_minute=3, max_held_per_user_slot=2)
    admin = await new_user(h, admin=True)
    slot_id = await new_slot(h, admin, capacity=50)
    a, b = await new_user(h), await new_user(h)
    items = [
        {"slot_id": slot_id, "idempotency_key": f"a{n}", "user_id": int(a.user_id)}
        for n in range(4)
    ] + [{"slot_id": slot_id, "idempotency_key": "b0", "user_id": int(b.user_id)}]

    body = (await _batch(h, admin, items)).json()

    assert _statuses(body) == [201, 201, 409, 429, 201]
    assert body["results"][2]["problem"]["type"].endswith("user-hold-limit")
    assert body["results"][3]["problem"]["retry_after"] >= 1
    holds = h.ctx.metrics.registry.get_sample_value
    assert holds("slotkeeper_holds_total", {"outcome": "rate_limited"}) == 1
    assert holds("slotkeeper_holds_total", {"outcome": "UserHoldLimit"}) == 1


async def test_user_id_needs_an_admin_token(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin)
    item = {"slot_id": slot_id, "idempotency_key": "x", "user_id": int(admin.user_id)}
    r = await _batch(h, user, [{"slot_id": slot_id, "idempotency_key": "y"}, item])
    assert_problem(r, 403, "forbidden")
    assert await remaining(h, user, slot_id) == 10  # nothing of it was held
    r = await h.client.post("/holds/batch", json={"items": [item]})
    assert_problem(r, 401)


async def test_unknown_end_user_is_the_items_422(h: Harness, admin: User) -> None:
    slot_id = await new_slot(h, admin)
    r = await _batch(h, admin, [{"slot_id": slot_id, "idempotency_key": "x", "user_id": 10**15}])
    assert _statuses(r.json()) == [422]


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        {"items": []},
        {"items": {}},
        {"items": [{"slot_id": 1, "idempotency_key": "a"}], "extra": 1},
        {"things": []},
    ],
)
async def test_malformed_body_is_422(h: Harness, user: User, payload: Any) -> None:
    r = await h.client.post("/holds/batch", json=payload, headers=user.headers)
    assert_problem(r, 422, "validation-error")


async def test_too_many_items_is_422(shared: Shared) -> None:
    h = await shared.make(max_batch=2)
    user = await new_user(h)
    items = [{"slot_id": 1, "idempotency_key": f"k{n}"} for n in range(3)]
    assert_problem(await _batch(h, user, items), 422, "validation-error")


async def test_item_validation_is_per_item(h: Harness, admin: User, user: User) -> None:
    slot_id = await new_slot(h, admin)
    bad = [
        "not an object",
        {"idempotency_key": "a"},
        {"slot_id": 0, "idempotency_key": "a"},
        {"slot_id": slot_id},
        {"slot_id": slot_id, "idempotency_key": ""},
        {"slot_id": slot_id, "idempotency_key": "é"},
        {"slot_id": slot_id, "idempotency_key": "a", "quantity": 101},
        {"slot_id": slot_id, "idempotency_key": "a", "colour": "red"},
    ]
    r = await _batch(h, user, [*bad, {"slot_id": slot_id, "idempotency_key": "ok"}])
    assert _statuses(r.json()) == [422] * len(bad) + [201]
    hold = r.json()["results"][-1]["hold"]
    assert hold == await held_body(h, user, hold["hold_id"])


async def held_body(h: Harness, user: User, hold_id: str) -> Any:
    r = await h.client.get(f"/holds/{hold_id}", headers=user.headers)
    return r.json()
