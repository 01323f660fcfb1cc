"""The event feed (admin): ``GET /events`` pages, ``GET /events/stream`` live (SSE).

A cursor is an event's ``id``; ids grow in commit order and are never reused, so
``after=<id>`` (or ``Last-Event-ID``) stays valid forever. EventSource cannot send
an Authorization header: the stream also takes ``?ticket=``, a 60-second token
for this stream only, from ``POST /events/stream/ticket``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import jwt
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sync import feed

from .auth import Principal
from .context import AppContext
from .http import MAX_ID, json_response, query_limit
from .problems import Problem
from .user_ids import is_user_id

__all__ = ["HEARTBEAT_S", "POLL_S", "TICKET_TTL_S", "require_admin", "routes"]

PAGE_LIMIT = 1000
DEFAULT_LIMIT = 100
TICKET_TTL_S = 60
HEARTBEAT_S = 15.0  # a comment line when nothing was sent this long (proxies, liveness)
POLL_S = 0.25  # how often a quiet stream asks the feed for news
_STREAM_BATCH = 500
_TICKET_AUDIENCE = "slotkeeper:events-stream"


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Problem("forbidden", "this route is for administrators")


def _cursor(raw: str, name: str) -> int:
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > MAX_ID:
        raise Problem("bad-request", f"{name} must be an event id given out by this server")
    return int(raw)


def _filters(request: Request) -> tuple[int | None, list[str]]:
    q = request.query_params
    slot_id = None
    if "slot_id" in q:
        raw = q["slot_id"]
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not 0 < int(raw) <= MAX_ID:
            raise Problem("bad-request", "slot_id must be a positive integer")
        slot_id = int(raw)
    types: list[str] = []
    for raw in q.getlist("type"):
        for name in filter(None, (t.strip() for t in raw.split(","))):
            if name.endswith(".*"):
                matched = [t for t in feed.EVENT_TYPES if t.startswith(name[:-1])]
            else:
                matched = [name] if name in feed.EVENT_TYPES else []
            if not matched:
                raise Problem(
                    "bad-request",
                    f"unknown event type {name[:64]!r}; known: {', '.join(feed.EVENT_TYPES)}",
                )
            types.extend(t for t in matched if t not in types)
    return slot_id, types


async def list_events(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    require_admin(await ctx.tokens.authenticate(request))
    q = request.query_params
    after = _cursor(q["after"], "after") if "after" in q else 0
    limit = query_limit(request, default=DEFAULT_LIMIT, maximum=PAGE_LIMIT)
    slot_id, types = _filters(request)
    events = await feed.read(ctx.pool, after=after, limit=limit, slot_id=slot_id, types=types)
    # The feed never ends: the next page is always there, empty until something happens.
    params = dict(q)
    params["after"] = str(events[-1].feed_id if events else after)
    link = f'<{request.url.path}?{urlencode(params)}>; rel="next"'
    return json_response([e.body() for e in events], headers={"Link": link})


async def stream_ticket(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    principal = await ctx.tokens.authenticate(request)
    require_admin(principal)
    now = int(time.time())
    claims = {
        "sub": principal.user_id,
        "role": principal.role,
        "aud": _TICKET_AUDIENCE,
        "iat": now,
        "exp": now + TICKET_TTL_S,
        "jti": uuid.uuid4().hex,
    }
    settings = ctx.settings
    ticket = jwt.encode(claims, settings.jwt_secret, algorithm=settings.jwt_algorithm)
    return json_response({"ticket": ticket, "expires_in": TICKET_TTL_S})


def _ticket_principal(ctx: AppContext, ticket: str) -> Principal:
    try:
        claims = jwt.decode(
            ticket,
            ctx.settings.jwt_secret,
            algorithms=[ctx.settings.jwt_algorithm],
            audience=_TICKET_AUDIENCE,
            options={"require": ["sub", "exp", "aud"]},
        )
        sub = claims["sub"]
        if not (isinstance(sub, str) and is_user_id(sub)):
            raise ValueError(sub)
        return Principal(sub, str(claims.get("role")), "", int(claims["exp"]))
    except (jwt.InvalidTokenError, ValueError, TypeError):
        raise Problem(
            "unauthorized",
            "the stream ticket is invalid or expired; get a new one",
            headers={"WWW-Authenticate": 'Bearer realm="slotkeeper"'},
        ) from None


def _frame(event: feed.FeedEvent) -> bytes:
    body = orjson.dumps(event.body())
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.feed_id, event.type.encode(), body)


async def _frames(
    ctx: AppContext, cursor: int, slot_id: int | None, types: list[str]
) -> AsyncIterator[bytes]:
    yield b"retry: 1000\n\n"
    quiet_since = time.monotonic()
    budget = ctx.settings.backend_timeout_s
    while True:
        events: list[feed.FeedEvent] = []
        try:
            async with asyncio.timeout(budget):
                events = await feed.read(
                    ctx.pool, after=cursor, limit=_STREAM_BATCH, slot_id=slot_id, types=types
                )
        except Exception:
            # PostgreSQL away: keep the connection (heartbeats go on), try again.
            events = []
        for event in events:
            yield _frame(event)
            cursor = event.feed_id
        if events:
            quiet_since = time.monotonic()
            if len(events) == _STREAM_BATCH:
                continue
        elif time.monotonic() - quiet_since >= HEARTBEAT_S:
            yield b": heartbeat\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(POLL_S)


async def stream_events(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    q = request.query_params
    # The middleware leaves this route untimed; its set-up gets the usual budget.
    async with asyncio.timeout(ctx.settings.backend_timeout_s):
        if "ticket" in q:
            principal = _ticket_principal(ctx, q["ticket"])
        else:
            principal = await ctx.tokens.authenticate(request)
        require_admin(principal)
        slot_id, types = _filters(request)
        resume = request.headers.get("last-event-id") or q.get("after")
        start = _cursor(resume, "Last-Event-ID") if resume else await feed.latest_id(ctx.pool)
    headers: dict[str, Any] = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        _frames(ctx, start, slot_id, types), media_type="text/event-stream", headers=headers
    )


routes = [
    Route("/events", list_events, methods=["GET"], name="events"),
    Route("/events/stream", stream_events, methods=["GET"], name="events_stream"),
    Route("/events/stream/ticket", stream_ticket, methods=["POST"], name="events_ticket"),
]
