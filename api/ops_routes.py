"""Operations: liveness, readiness, metrics, the OpenAPI document and its page."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from sync.drain import sync_lag_ms
from sync.service import read_counters
from sync.waitlist import waitlist_counts

from .context import AppContext
from .http import json_response
from .openapi import openapi_document

__all__ = ["routes"]


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


class _NotReady(Exception):
    def __init__(self, error: str, **details: Any) -> None:
        super().__init__(error)
        self.error = error
        self.details = details


async def _check(probe: Any, timeout_s: float) -> dict[str, Any]:
    try:
        async with asyncio.timeout(timeout_s):
            return {"ok": True, **(await probe())}
    except _NotReady as exc:
        return {"ok": False, "error": exc.error, **exc.details}
    except Exception as exc:  # any failure means "not ready"; the type says which
        return {"ok": False, "error": type(exc).__name__}


async def readyz(request: Request) -> Response:
    """200 when Redis and PostgreSQL answer, scripts are loaded and no partition is lost."""
    ctx: AppContext = request.app.state.ctx

    async def redis_probe() -> dict[str, Any]:
        if not await ctx.engine.scripts_loaded():
            await ctx.engine.load_scripts()
        missing = await ctx.engine.unavailable_partitions()
        if missing:
            raise _NotReady("state-unavailable", unavailable_partitions=missing)
        lag_ms = await sync_lag_ms(ctx.engine, ctx.redis)
        return {"partitions": ctx.settings.partitions, "sync_lag_seconds": lag_ms / 1000}

    async def postgres_probe() -> dict[str, Any]:
        await ctx.pool.fetchval("SELECT 1")
        return {}

    # Below the request budget, so a hanging backend is reported here as a check
    # that failed, not cut off by the middleware's timeout.
    timeout = ctx.settings.backend_timeout_s * 0.8
    redis_state, postgres_state = await asyncio.gather(
        _check(redis_probe, timeout), _check(postgres_probe, timeout)
    )
    checks = {"redis": redis_state, "postgres": postgres_state}
    ready = redis_state["ok"] and postgres_state["ok"]
    return json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503
    )


async def metrics(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    with contextlib.suppress(Exception):  # metrics answer even with Redis away
        async with asyncio.timeout(ctx.settings.backend_timeout_s / 2):
            ctx.metrics.sync_lag.set(await sync_lag_ms(ctx.engine, ctx.redis) / 1000)
            expired, drift = await read_counters(ctx.engine, ctx.redis)
            ctx.metrics.expired.set(expired)
            ctx.metrics.drift.set(drift)
            for name, value in (await waitlist_counts(ctx.pool)).items():
                ctx.metrics.waitlist.labels(name).set(value)
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def openapi_json(request: Request) -> Response:
    return json_response(openapi_document())


_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>slotkeeper API</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
code,pre{background:#f4f4f4;padding:.1rem .3rem}h2{border-bottom:1px solid #ddd}</style>
</head><body><h1>slotkeeper API</h1>
<p>The machine-readable contract is <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p>
<div id="routes">Loading…</div>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const out = [];
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const codes = Object.entries(op.responses || {})
        .map(([c, r]) => `<li><code>${c}</code> ${r.description}</li>`).join('');
      out.push(`<h2><code>${method.toUpperCase()} ${path}</code></h2>` +
        `<p>${op.summary || ''}</p><ul>${codes}</ul>`);
    }
  }
  document.getElementById('routes').innerHTML = out.join('');
});
</script></body></html>"""


async def docs(request: Request) -> Response:
    return HTMLResponse(_DOCS_PAGE)


routes = [
    Route("/healthz", healthz, methods=["GET"], name="healthz"),
    Route("/readyz", readyz, methods=["GET"], name="readyz"),
    Route("/metrics", metrics, methods=["GET"], name="metrics"),
    Route("/openapi.json", openapi_json, methods=["GET"], name="openapi"),
    Route("/docs", docs, methods=["GET"], name="docs"),
]
