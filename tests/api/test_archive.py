"""SPEC: a slot that is over leaves Redis with its holds; PostgreSQL answers for them
over HTTP with the same bodies, and anything that would change them is 409
`slot-archived` (sync/archive.py)."""

from __future__ import annotations

from typing import Any

import pytest

import engine
from api.settings import ConfigError, Settings
from sync.archive import archive_finished
from sync.drain import drain_all

from .conftest import Harness, HarnessFactory

PAST = "2020-01-01T12:00:00+00:00"


def _archived_409(r: Any) -> None:
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"] == "/problems/slot-archived"


async def _archive(h: Harness) -> int:
    await drain_all(h.ctx.engine, h.ctx.redis, h.ctx.pool)
    stats = await archive_finished(h.ctx.engine, h.ctx.redis, h.ctx.pool, after_s=0)
    return stats.archived


async def test_an_archived_slot_and_its_holds_read_the_same(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    user, other = await h.user(), await h.user()
    slot_id = await h.slot(10, label="gate 4", starts_at="2020-01-01T10:00:00+00:00", ends_at=PAST)
    live_id = await h.slot(10, ends_at="2999-01-01T00:00:00+00:00")
    headers = {**user["headers"], "Idempotency-Key": "k-sold"}
    sold = await h.client.post(f"/slots/{slot_id}/hold", json={"quantity": 2}, headers=headers)
    assert sold.status_code == 201, sold.text
    sold_id = sold.json()["hold_id"]
    r = await h.client.post(f"/holds/{sold_id}/confirm", headers=user["headers"])
    assert r.status_code == 200, r.text
    gone = await h.client.post(
        f"/slots/{slot_id}/hold", headers={**user["headers"], "Idempotency-Key": "k-gone"}
    )
    gone_id = gone.json()["hold_id"]
    assert (await h.client.delete(f"/holds/{gone_id}", headers=user["headers"])).status_code == 200

    async def reads() -> list[Any]:
        bodies = []
        for path in (f"/slots/{slot_id}", f"/holds/{sold_id}", f"/holds/{gone_id}", "/holds"):
            r = await h.client.get(path, headers=user["headers"])
            assert r.status_code == 200, (path, r.text)
            bodies.append(r.json())
        replay = await h.client.post(
            f"/slots/{slot_id}/hold", json={"quantity": 2}, headers=headers
        )
        assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
        return [*bodies, replay.json()]

    await drain_all(h.ctx.engine, h.ctx.redis, h.ctx.pool)  # GET /holds reads PostgreSQL
    before = await reads()
    assert before[0]["remaining"] == 8 and before[1]["status"] == "confirmed"

    assert await _archive(h) == 1
    with pytest.raises(engine.SlotNotFound):
        await h.ctx.engine.slot(slot_id)
    with pytest.raises(engine.HoldNotFound):
        await h.ctx.engine.get_hold(sold_id)
    assert await reads() == before

    # The availability list has live slots only; the archived one reads by id.
    h.ctx.cache.invalidate()
    r = await h.client.get("/slots/availability", headers=user["headers"])
    assert [s["slot_id"] for s in r.json()] == [live_id]
    # Someone else's hold of an archived slot is as unknown as ever.
    r = await h.client.get(f"/holds/{sold_id}", headers=other["headers"])
    assert r.status_code == 404
    r = await h.client.post(f"/holds/{sold_id}/confirm", headers=other["headers"])
    assert r.status_code == 404


async def test_changes_to_an_archived_slot_are_409(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    user = await h.user()
    admin = await h.user(admin=True)
    slot_id = await h.slot(5, ends_at=PAST)
    headers = {**user["headers"], "Idempotency-Key": "first"}
    made = await h.client.post(f"/slots/{slot_id}/hold", headers=headers)
    hold_id = made.json()["hold_id"]
    assert (await h.client.post(f"/holds/{hold_id}/confirm", headers=user["headers"])).is_success
    assert await _archive(h) == 1

    # A new hold, and every change to a hold of the slot: 409, never 404 or 500.
    r = await h.client.post(
        f"/slots/{slot_id}/hold", headers={**user["headers"], "Idempotency-Key": "new"}
    )
    _archived_409(r)
    _archived_409(await h.client.delete(f"/holds/{hold_id}", headers=user["headers"]))
    _archived_409(await h.client.post(f"/holds/{hold_id}/confirm", headers=user["headers"]))
    _archived_409(await h.client.post(f"/holds/{hold_id}/extend", headers=user["headers"]))
    r = await h.client.patch(f"/slots/{slot_id}", json={"capacity": 9}, headers=admin["headers"])
    _archived_409(r)
    # The key that made the hold still replays it, and only with its quantity.
    r = await h.client.post(f"/slots/{slot_id}/hold", json={"quantity": 2}, headers=headers)
    assert r.status_code == 422 and r.json()["type"] == "/problems/idempotency-mismatch"
    r = await h.client.post(f"/slots/{slot_id}/hold", headers=headers)
    assert r.status_code == 201 and r.json()["status"] == "confirmed"
    # A batch answers each item as the single route does.
    items = [
        {"slot_id": slot_id, "idempotency_key": "first"},
        {"slot_id": slot_id, "idempotency_key": "another"},
    ]
    r = await h.client.post("/holds/batch", json={"items": items}, headers=user["headers"])
    first, second = r.json()["results"]
    assert first["status"] == 201 and first["replayed"] and first["hold"]["hold_id"] == hold_id
    assert second["status"] == 409
    assert second["problem"]["type"] == "/problems/slot-archived"
    # A slot that never existed is still 404.
    r = await h.client.post(
        "/slots/987654/hold", headers={**user["headers"], "Idempotency-Key": "x"}
    )
    assert r.status_code == 404
    assert (await h.client.get("/slots/987654", headers=user["headers"])).status_code == 404


def test_the_archive_delay_is_a_checked_setting() -> None:
    assert Settings().sync_settings().slot_archive_after_s == 86_400
    for name in ("SLOTKEEPER_SLOT_ARCHIVE_AFTER_SECONDS", "SLOTKEEPER_SLOT_ARCHIVE_AFTER_S"):
        assert Settings.from_env({name: "3600"}).sync_settings().slot_archive_after_s == 3600
    with pytest.raises(ConfigError, match="SLOTKEEPER_SLOT_ARCHIVE_AFTER_SECONDS"):
        Settings.from_env({"SLOTKEEPER_SLOT_ARCHIVE_AFTER_S": "-1"})


async def test_a_group_leaves_redis_only_with_all_its_slots(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    user = await h.user()
    over, later = await h.slot(5, ends_at=PAST), await h.slot(5, ends_at="2999-01-01T00:00:00Z")
    a, b = await h.slot(5, ends_at=PAST), await h.slot(5, ends_at=PAST)

    async def booked(items: list[int], key: str) -> str:
        r = await h.client.post(
            "/holds",
            json={"items": [{"slot_id": s} for s in items]},
            headers={**user["headers"], "Idempotency-Key": key},
        )
        assert r.status_code == 201, r.text
        group_id = str(r.json()["group_id"])
        r = await h.client.post(f"/holds/groups/{group_id}/confirm", headers=user["headers"])
        assert r.status_code == 200, r.text
        return group_id

    await booked([over, later], "g-mixed")
    ended = await booked([a, b], "g-over")
    # The group on a slot still to come keeps its ended slot in Redis.
    assert await _archive(h) == 2
    assert (await h.ctx.engine.slot(over)).confirmed == 1
    with pytest.raises(engine.SlotNotFound):
        await h.ctx.engine.slot(a)
    # A group that is over is read-only as a whole.
    _archived_409(await h.client.delete(f"/holds/groups/{ended}", headers=user["headers"]))
    r = await h.client.delete(f"/holds/groups/{ended}", headers=(await h.user())["headers"])
    assert r.status_code == 404
