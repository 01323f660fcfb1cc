"""SPEC "HTTP API" / Operations: health, readiness (and lost state), metrics, request ids,
the OpenAPI document."""

from __future__ import annotations

import re

from api.app import create_app
from engine.sequence import fail_closed
from sync.restore import ensure_partitions

from .conftest import Harness, Shared
from .support import assert_problem, held, make_hold, new_slot, new_user


async def test_healthz(h: Harness) -> None:
    r = await h.client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


async def test_readyz_reports_each_check(h: Harness) -> None:
    r = await h.client.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready"
    assert body["checks"]["redis"]["ok"] is True
    assert body["checks"]["postgres"]["ok"] is True
    assert h.settings.key_prefix not in r.text


async def test_lost_partition_fails_closed_until_rebuilt(shared: Shared) -> None:
    h = await shared.make()  # its own key prefix: the damage stays here
    partitions = h.settings.partitions
    admin = await new_user(h, admin=True)
    user = await new_user(h)
    lost = await new_slot(h, admin, capacity=5, slot_id=partitions * 1000)  # partition 0
    intact = await new_slot(h, admin, capacity=5, slot_id=partitions * 1000 + 1)
    hold = await held(h, user, lost)

    await fail_closed(h.ctx.redis, h.ctx.engine.keys, 0)

    r = await h.client.get("/readyz")
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["status"] != "ready"
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["redis"]["unavailable_partitions"] == [0]
    assert "state-unavailable" in r.text
    assert h.settings.key_prefix not in r.text

    refused = await make_hold(h, user, lost, key="during")
    assert_problem(refused, 503, key_prefix=h.settings.key_prefix)
    assert refused.json()["type"].endswith("state-unavailable")
    assert int(refused.headers["retry-after"]) >= 1
    for method, path in (
        ("GET", f"/slots/{lost}"),
        ("POST", f"/holds/{hold['hold_id']}/confirm"),
        ("DELETE", f"/holds/{hold['hold_id']}"),
        ("GET", f"/holds/{hold['hold_id']}"),
        ("PATCH", f"/slots/{lost}"),
    ):
        # The PATCH body only: confirm validates its own body ({"quantity": k}) first.
        body = {"capacity": 6} if method == "PATCH" else None
        r = await h.client.request(method, path, headers=admin.headers, json=body)
        assert_problem(r, 503, "state-unavailable", key_prefix=h.settings.key_prefix)
    # Other partitions keep working.
    assert (await make_hold(h, user, intact)).status_code == 201

    # The rebuild (the worker's job) brings it back by itself.
    assert await ensure_partitions(h.ctx.engine, h.ctx.redis, h.ctx.pool) == [0]
    assert (await h.client.get("/readyz")).status_code == 200
    again = await make_hold(h, user, lost, key="after")
    assert again.status_code == 201, again.text


async def test_metrics_by_route_template_and_hold_outcome(shared: Shared) -> None:
    h = await shared.make()
    admin = await new_user(h, admin=True)
    user = await new_user(h)
    slot_id = await new_slot(h, admin, capacity=1)
    assert (await h.client.get(f"/slots/{slot_id}", headers=user.headers)).status_code == 200
    assert (await h.client.get("/slots/424242", headers=user.headers)).status_code == 404
    assert (await make_hold(h, user, slot_id, key="m")).status_code == 201
    assert (await make_hold(h, user, slot_id, key="m")).status_code == 201
    assert (await make_hold(h, await new_user(h), slot_id)).status_code == 409
    assert (await h.client.get("/no/such/path/123")).status_code == 404

    r = await h.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text

    def count(name: str, **labels: str) -> float:
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{"):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    requests = "slotkeeper_http_requests_total"
    assert count(requests, route="/slots/{slot_id}", method="GET", status="200") == 1
    assert count(requests, route="/slots/{slot_id}", method="GET", status="404") == 1
    assert count(requests, route="/slots/{slot_id}/hold", method="POST", status="201") == 2
    assert count(requests, route="/slots/{slot_id}/hold", method="POST", status="409") == 1
    assert count(requests, route="/slots", method="POST", status="201") == 1
    # Raw paths never become labels (bounded cardinality).
    assert f'route="/slots/{slot_id}"' not in text
    assert "/no/such/path" not in text
    assert re.search(r'slotkeeper_http_request_duration_seconds_bucket\{[^}]*route="/slots', text)
    assert count("slotkeeper_holds_total", outcome="created") == 1
    assert count("slotkeeper_holds_total", outcome="replayed") == 1
    assert count("slotkeeper_holds_total") == 3  # and the refusal, under its own outcome


async def test_every_response_has_a_request_id(h: Harness) -> None:
    user = await new_user(h)
    responses = [
        await h.client.get("/healthz"),
        await h.client.get("/metrics"),
        await h.client.get("/slots/availability", headers=user.headers),
        await h.client.get("/slots/availability"),
        await h.client.get("/nope"),
        await h.client.post("/auth/login", json={}),
        await h.client.post("/slots", json={"capacity": 1}, headers=user.headers),
        await h.client.get("/slots/abc", headers=user.headers),
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids), [(r.status_code, r.headers) for r in responses]
    assert len(set(ids)) == len(ids)


async def test_incoming_request_id_is_echoed(h: Harness) -> None:
    user = await new_user(h)
    for method, path, headers in (
        ("GET", "/healthz", {}),
        ("GET", "/slots/availability", user.headers),
        ("GET", "/slots/availability", {}),
        ("GET", "/slots/0", user.headers),
    ):
        r = await h.client.request(method, path, headers={**headers, "X-Request-ID": "abc-123.X"})
        assert r.headers["x-request-id"] == "abc-123.X"
        assert r.headers.get_list("x-request-id") == ["abc-123.X"]


# Status codes SPEC "HTTP API" (and the tests of this folder) show each route answering.
DOCUMENTED = {
    ("post", "/auth/login"): {200, 401, 413, 415, 422, 429},
    ("get", "/login"): {200, 401, 413, 415, 422, 429},
    ("post", "/login"): {200, 401, 413, 415, 422, 429},
    ("post", "/auth/refresh"): {200, 401},
    ("get", "/refresh"): {200, 401},
    ("post", "/refresh"): {200, 401},
    ("get", "/slots/availability"): {200, 304, 400, 401, 503},
    ("post", "/slots"): {201, 401, 403, 409, 413, 415, 422},
    ("get", "/slots/{slot_id}"): {200, 400, 401, 404, 503},
    ("patch", "/slots/{slot_id}"): {200, 400, 401, 403, 404, 409, 413, 415, 422, 503},
    ("post", "/slots/{slot_id}/hold"): {201, 400, 401, 404, 409, 413, 415, 422, 429, 503},
    ("get", "/holds"): {200, 400, 401},
    ("get", "/holds/{hold_id}"): {200, 401, 404, 503},
    ("delete", "/holds/{hold_id}"): {200, 401, 404, 503},
    ("post", "/holds/{hold_id}/confirm"): {200, 401, 404, 409, 410, 503},
    ("get", "/healthz"): {200},
    ("get", "/readyz"): {200, 503},
    ("get", "/metrics"): {200},
}


async def test_openapi_document_lists_every_route(h: Harness) -> None:
    r = await h.client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    app = create_app(h.settings, context=h.ctx)
    for route in app.routes:
        path = getattr(route, "path", None)
        methods = getattr(route, "methods", None) or set()
        assert path in doc["paths"], path
        for method in methods - {"HEAD"}:
            assert method.lower() in doc["paths"][path], (method, path)
    for (method, path), codes in DOCUMENTED.items():
        documented = {int(code) for code in doc["paths"][path][method]["responses"]}
        assert codes <= documented, (method, path, sorted(codes - documented))
    page = await h.client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in page.text


async def test_metrics_expose_the_drift_the_worker_found(harness: Harness) -> None:
    from sync.service import SyncService

    h = harness
    admin = await new_user(h, admin=True)
    slot_id = await new_slot(h, admin, capacity=3)
    service = SyncService(h.ctx.engine, h.ctx.redis, h.ctx.pool)
    assert await service.check_drift() == {}

    def drift(text: str) -> float:
        found = re.search(r"^slotkeeper_sync_drift (\S+)$", text, re.M)
        assert found, text
        return float(found.group(1))

    assert drift((await h.client.get("/metrics")).text) == 0
    # The catalog loses the slot that Redis still sells: one difference.
    await h.ctx.pool.execute("DELETE FROM slots WHERE slot_id = $1", slot_id)
    assert len(await service.check_drift()) == 1
    assert drift((await h.client.get("/metrics")).text) == 1
