from .conftest import Harness


async def test_hold_flow(harness: Harness) -> None:
    slot_id = await harness.slot(capacity=2)
    user = await harness.user()
    r = await harness.client.post(
        f"/slots/{slot_id}/hold", headers={**user["headers"], "Idempotency-Key": "k1"}
    )
    assert r.status_code == 201, r.text
    hold = r.json()
    r2 = await harness.client.post(
        f"/slots/{slot_id}/hold", headers={**user["headers"], "Idempotency-Key": "k1"}
    )
    assert r2.status_code == 201 and r2.headers["idempotent-replayed"] == "true"
    r3 = await harness.client.get("/slots/availability", headers=user["headers"])
    assert r3.json()[0]["remaining"] == 1, r3.text
    r4 = await harness.client.post(f"/holds/{hold['hold_id']}/confirm", headers=user["headers"])
    assert r4.json()["status"] == "confirmed"
    r5 = await harness.client.post(
        "/auth/login", json={"email": user["email"], "password": user["password"]}
    )
    assert r5.status_code == 200, r5.text
    assert "x-request-id" in r5.headers
