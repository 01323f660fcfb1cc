"""The request budget (api/middleware.py): one sweep timer instead of a timeout per request."""

from __future__ import annotations

import asyncio
import time

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router

from api.metrics import Metrics
from api.middleware import RequestMiddleware

BUDGET_S = 0.3


async def hang(request: Request) -> Response:
    await asyncio.sleep(3600)
    raise AssertionError("not reached")


async def quick(request: Request) -> Response:
    await asyncio.sleep(0.01)
    return JSONResponse({"ok": True})


async def own_timeout(request: Request) -> Response:
    # A backend's own timeout (asyncpg raises the builtin TimeoutError) is a 503 too.
    raise TimeoutError


def make_app() -> tuple[Router, RequestMiddleware]:
    # A bare router: what the app's own exception handlers leave to the middleware.
    app = Router(routes=[Route("/hang", hang), Route("/quick", quick), Route("/own", own_timeout)])
    middleware = RequestMiddleware(app, timeout_s=BUDGET_S, metrics=Metrics(), access_log=False)
    return app, middleware


def client(middleware: RequestMiddleware) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware), base_url="http://t")


async def test_a_request_past_its_budget_answers_503_in_time_and_others_are_unharmed() -> None:
    _, middleware = make_app()
    async with client(middleware) as c:
        started = time.monotonic()
        hung, *fine = await asyncio.gather(c.get("/hang"), *(c.get("/quick") for _ in range(20)))
        elapsed = time.monotonic() - started
    assert hung.status_code == 503
    assert hung.json()["type"].endswith("backend-unavailable")
    assert hung.headers["retry-after"] == "1" and hung.headers["x-request-id"]
    assert BUDGET_S <= elapsed < BUDGET_S + 0.5, elapsed
    assert [r.status_code for r in fine] == [200] * 20
    assert not middleware._in_flight  # every request left the table
    await asyncio.sleep(0.1)
    assert middleware._sweeper is None  # and the sweep stopped with nothing in flight


async def test_a_backends_own_timeout_is_503() -> None:
    _, middleware = make_app()
    async with client(middleware) as c:
        r = await c.get("/own")
    assert r.status_code == 503 and r.json()["type"].endswith("backend-unavailable")


async def test_a_cancel_from_outside_is_not_turned_into_an_answer() -> None:
    _, middleware = make_app()
    async with client(middleware) as c:
        task = asyncio.ensure_future(c.get("/hang"))
        await asyncio.sleep(0.05)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("the cancel was swallowed")
    assert not middleware._in_flight


async def test_the_budget_holds_across_event_loops() -> None:
    # Tests build one app and use it from more than one loop; the sweep follows.
    _, middleware = make_app()

    async def once() -> int:
        async with client(middleware) as c:
            return (await c.get("/hang")).status_code

    assert await asyncio.get_running_loop().run_in_executor(None, asyncio.run, once()) == 503
    assert await once() == 503
