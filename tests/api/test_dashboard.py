"""GET /dashboard in a real headless Chromium (Debian's `chromium`, driven by
playwright's Python package): sign in on the page, see the day's slots, a hold made
over the API moves its bar within 2 s. Writes the README's screenshot."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import TimeoutError as PlaywrightTimeout
from playwright.async_api import async_playwright

from .conftest import Harness
from .live import PASSWORD, live_server
from .support import assert_problem, new_slot, new_user

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        raise AssertionError(
            f"{CHROMIUM} is missing: install Debian's package `chromium`"
            " (apt-get install -y chromium); .ci/run does this"
        )


async def test_dashboard_assets_are_cached_and_the_page_is_public(harness: Harness) -> None:
    r = await harness.client.get("/dashboard")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    page = r.text
    assert "http://" not in page and "https://" not in page  # no CDN
    for name in ("dashboard.js", "dashboard.css"):
        start = page.index(f"/dashboard/assets/{name}?v=")
        url = page[start : page.index('"', start)]
        r = await harness.client.get(url)
        assert r.status_code == 200, url
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        again = await harness.client.get(url, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
        stale = await harness.client.get(f"/dashboard/assets/{name}?v=old")
        assert stale.headers["cache-control"] == "no-cache"
    assert (await harness.client.get("/dashboard/assets/nope.js")).status_code == 404


async def test_dashboard_follows_a_hold_within_two_seconds(database: str, tmp_path: Path) -> None:
    _require_chromium()
    # The page's clock is fixed on this day (its default day), so the picture is the
    # same on every run and the tree stays clean.
    today = datetime(2030, 1, 15, tzinfo=UTC)
    async with (
        # A generous request budget: signing in (argon2) on a loaded 2-core machine can
        # take over the default second, and this test is about the page.
        live_server(
            database,
            tmp_path,
            with_worker=True,
            hold_rate_per_minute=0,
            backend_timeout_ms=10_000,
        ) as server,
        server.client(timeout_s=20) as client,
    ):
        admin = await server.user(client, admin=True)
        user = await server.user(client)
        slots = []
        for hour, label, capacity in ((8, "Gate A", 12), (10, "Gate B", 8), (13, "Dock 3", 20)):
            r = await client.post(
                "/slots",
                json={
                    "capacity": capacity,
                    "label": label,
                    "starts_at": (today + timedelta(hours=hour)).isoformat(),
                    "ends_at": (today + timedelta(hours=hour + 1)).isoformat(),
                },
                headers=admin["headers"],
            )
            assert r.status_code == 201, r.text
            slots.append(r.json()["slot_id"])
        for slot_id, confirmed in zip(slots[1:], (5, 9), strict=True):
            for _ in range(confirmed):
                await _hold(client, user, slot_id, confirm=True)
        await _hold(client, user, slots[1], quantity=2)

        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=_ARGS)
            try:
                page = await browser.new_page(
                    viewport={"width": 420, "height": 640}, timezone_id="UTC"
                )
                await page.clock.set_fixed_time(today + timedelta(hours=7))
                await page.goto(f"{server.base_url}/dashboard")
                await page.fill("#email", admin["email"])
                await page.fill("#password", PASSWORD)
                await page.click("button[type=submit]")
                bar = page.locator(f'.slot[data-slot-id="{slots[0]}"]')
                try:
                    await bar.wait_for(timeout=20_000)
                except PlaywrightTimeout:
                    status = await page.inner_text("#status")
                    error = await page.inner_text("#login-error")
                    raise AssertionError(f"no bar: status {status!r}, error {error!r}") from None
                assert await bar.get_attribute("data-held") == "0"
                assert not await page.is_visible("#login")
                await page.wait_for_selector("#status.live", timeout=20_000)

                started = time.monotonic()
                await _hold(client, user, slots[0], quantity=3)
                await page.wait_for_selector(
                    f'.slot[data-slot-id="{slots[0]}"][data-held="3"]', timeout=2_000
                )
                elapsed = time.monotonic() - started
                assert await bar.get_attribute("data-remaining") == "9"
                assert "3 held" in await bar.inner_text()
                await page.wait_for_timeout(500)  # the highlight fades before the picture
                SCREENSHOT.parent.mkdir(exist_ok=True)
                await page.screenshot(path=str(SCREENSHOT), full_page=True)
            finally:
                await browser.close()
        assert elapsed < 2.0
        print(f"the bar changed {elapsed * 1000:.0f} ms after the hold")


async def _hold(
    client: httpx.AsyncClient,
    user: dict[str, Any],
    slot_id: int,
    *,
    quantity: int = 1,
    confirm: bool = False,
) -> None:
    headers = {**user["headers"], "Idempotency-Key": uuid.uuid4().hex}
    r = await client.post(f"/slots/{slot_id}/hold", json={"quantity": quantity}, headers=headers)
    assert r.status_code == 201, r.text
    if confirm:
        r = await client.post(f"/holds/{r.json()['hold_id']}/confirm", headers=user["headers"])
        assert r.status_code == 200, r.text


async def test_dashboard_slots_is_for_admins_and_checks_its_query(harness: Harness) -> None:
    h = harness
    admin = await new_user(h, admin=True)
    user = await new_user(h)
    slot_id = await new_slot(h, admin, capacity=4, starts_at="2030-01-02T09:00:00+00:00")
    await new_slot(h, admin, capacity=4)
    assert_problem(await h.client.get("/dashboard/slots"), 401)
    assert_problem(await h.client.get("/dashboard/slots", headers=user.headers), 403)
    for query in ("from=yesterday", "to=2030-01-02", "slot_id=x"):
        r = await h.client.get(f"/dashboard/slots?{query}", headers=admin.headers)
        assert_problem(r, 400)
    r = await h.client.get("/dashboard/slots?slot_id=999999", headers=admin.headers)
    assert_problem(r, 404)
    day = "from=2030-01-02T00:00:00%2B00:00&to=2030-01-03T00:00:00%2B00:00"
    r = await h.client.get(f"/dashboard/slots?{day}", headers=admin.headers)
    assert r.status_code == 200 and r.headers["x-feed-cursor"].isdigit()
    assert [s["slot_id"] for s in r.json()] == [slot_id]
    assert r.json()[0] | {"starts_at": None} == {
        "slot_id": slot_id,
        "capacity": 4,
        "remaining": 4,
        "held": 0,
        "confirmed": 0,
        "state": "open",
        "waiting": 0,
        "starts_at": None,
    }
    r = await h.client.get("/dashboard/slots", headers=admin.headers)
    assert len(r.json()) == 2
