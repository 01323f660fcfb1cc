"""``GET /dashboard``: the live occupancy page for operators.

The page and its two assets are public (the admin logs in on the page); the data
comes from admin routes: ``GET /dashboard/slots`` for the bars, the event stream
for changes. Assets are served by the app with long cache lifetimes; the page
names them with a content hash, so a new release is fetched at once.
"""

from __future__ import annotations

import hashlib
import html
from functools import cache
from importlib import resources

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from sync import feed

from .context import AppContext
from .events_routes import require_admin
from .http import parse_datetime
from .problems import Problem

__all__ = ["routes"]

_ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"


@cache
def _asset(name: str) -> tuple[bytes, str]:
    """(content, short content hash) of a static file shipped in api/static."""
    content = resources.files("api").joinpath("static", name).read_bytes()
    return content, hashlib.sha256(content).hexdigest()[:16]


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>slotkeeper · live occupancy</title>
<link rel="stylesheet" href="/dashboard/assets/dashboard.css?v={css}">
<script src="/dashboard/assets/dashboard.js?v={js}" defer></script>
</head>
<body data-event-types="{types}">
<header>
  <h1>slotkeeper <span>live occupancy</span></h1>
  <div id="status" role="status">signed out</div>
</header>
<main>
  <form id="login" autocomplete="on">
    <h2>Administrator sign-in</h2>
    <label>Email <input id="email" name="email" type="email" required
      autocomplete="username"></label>
    <label>Password <input id="password" name="password" type="password" required
      autocomplete="current-password"></label>
    <button type="submit">Sign in</button>
    <p id="login-error" class="error" hidden></p>
  </form>
  <section id="board" hidden>
    <div class="controls">
      <label>Day <input id="day" type="date"></label>
      <label><input id="all-days" type="checkbox"> all days</label>
      <button id="logout" type="button">Sign out</button>
    </div>
    <p class="legend"><span class="key confirmed"></span>confirmed
      <span class="key held"></span>held <span class="key remaining"></span>remaining</p>
    <ol id="slots" aria-live="polite"></ol>
    <p id="empty" hidden>No slots on this day.</p>
  </section>
</main>
</body>
</html>
"""


async def page(request: Request) -> Response:
    types = html.escape(",".join(feed.EVENT_TYPES), quote=True)
    body = _PAGE.format(css=_asset("dashboard.css")[1], js=_asset("dashboard.js")[1], types=types)
    headers = {"Cache-Control": "no-cache", "Content-Security-Policy": _CSP}
    return HTMLResponse(body, headers=headers)


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _ASSETS:
        raise Problem("not-found", "no such asset")
    content, digest = _asset(name)
    etag = f'"{digest}"'
    # A URL with the current hash never changes; anything else is revalidated.
    versioned = request.query_params.get("v") == digest
    headers = {
        "ETag": etag,
        "Cache-Control": "public, max-age=31536000, immutable" if versioned else "no-cache",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(content, headers=headers, media_type=_ASSETS[name])


async def slots(request: Request) -> Response:
    """Slots with their confirmed / held / remaining units (and waiting), for the bars."""
    ctx: AppContext = request.app.state.ctx
    require_admin(await ctx.tokens.authenticate(request))
    q = request.query_params
    start = parse_datetime(q["from"], "from", slug="bad-request") if "from" in q else None
    end = parse_datetime(q["to"], "to", slug="bad-request") if "to" in q else None
    only = None
    if "slot_id" in q:
        raw = q["slot_id"]
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
            raise Problem("bad-request", "slot_id must be a positive integer")
        only = int(raw)
    # Read before the slots: a stream resumed from here misses nothing after them.
    cursor = await feed.latest_id(ctx.pool)
    if only is not None:
        found = [await ctx.engine.slot(only)]
    else:
        found = await ctx.engine.availability()
    waiting = await ctx.engine.waitlist.waiting(s.slot_id for s in found)
    out = []
    for slot in found:
        if start is not None or end is not None:
            if slot.starts_at is None:
                continue
            at = parse_datetime(slot.starts_at, "starts_at")
            if (start is not None and at < start) or (end is not None and at >= end):
                continue
        out.append(
            {
                "slot_id": slot.slot_id,
                "capacity": slot.capacity,
                "remaining": slot.remaining,
                "held": slot.held,
                "confirmed": slot.confirmed,
                "state": slot.state,
                "waiting": w.units if (w := waiting.get(slot.slot_id)) else 0,
                **slot.attributes,
            }
        )
    return Response(
        orjson.dumps(out),
        media_type="application/json",
        headers={"X-Feed-Cursor": str(cursor), "Cache-Control": "no-store"},
    )


routes = [
    Route("/dashboard", page, methods=["GET"], name="dashboard"),
    Route("/dashboard/assets/{name}", asset, methods=["GET"], name="dashboard_asset"),
    Route("/dashboard/slots", slots, methods=["GET"], name="dashboard_slots"),
]
