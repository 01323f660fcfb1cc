"""``GET /slots/availability``: pages of the cached snapshot, as ready-made bytes.

A page is rendered once per snapshot and query string (filters, ``limit``,
``cursor``, ``fields``), then served from the snapshot's small LRU in the coding
the client accepts; a repeated poll costs the token check and a dict lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response

from engine import Slot

from .availability import Page, Snapshot, select
from .context import AppContext
from .http import bad_cursor, decode_cursor, encode_cursor, parse_datetime, query_limit, slot_body
from .problems import Problem
from .representation import ReadyResponse, Representation, ready_headers

__all__ = ["SLOT_FIELDS", "availability"]

# What a slot in the list can carry (api/http.py slot_body), in the order it is sent.
SLOT_FIELDS = ("slot_id", "capacity", "remaining", "state", "label", "starts_at", "ends_at")
_CACHE_CONTROL = (b"cache-control", b"private, max-age=0")

Keep = Callable[[Slot], bool]


async def availability(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    await ctx.tokens.authenticate(request)
    snap = await ctx.cache.get()
    key = request.scope["query_string"]
    page = snap.pages.get(key)
    if page is None:  # a query not asked since this snapshot was built (or a bad one)
        page = snap.pages.put(key, _render(request, snap))
    headers = request.headers
    body, etag, gzipped = page.representation.select(headers.get("accept-encoding", ""))
    extra = [_CACHE_CONTROL] if page.link is None else [_CACHE_CONTROL, (b"link", page.link)]
    if _matches(headers.get("if-none-match"), etag):
        return ReadyResponse(b"", ready_headers(None, etag, gzipped, extra), 304)
    return ReadyResponse(body, ready_headers(body, etag, gzipped, extra))


def _matches(if_none_match: str | None, etag: str) -> bool:
    # Weak comparison (RFC 9110 §13.1.2): W/ does not matter, the coding does.
    if not if_none_match:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def _render(request: Request, snap: Snapshot) -> Page:
    after, limit, keep = _filters(request)
    fields = _fields(request)
    if after == 0 and keep is None and fields is None and limit >= len(snap.ids):
        return Page(snap.full, None)
    indices, next_id = select(snap, after, limit, keep)
    if fields is None:
        fragments = [snap.fragments[i] for i in indices]
    else:
        fragments = [
            orjson.dumps({k: v for k, v in slot_body(snap.slots[i]).items() if k in fields})
            for i in indices
        ]
    link = None
    if next_id is not None:
        params = dict(request.query_params)
        params["cursor"] = encode_cursor(f"s{next_id}")
        link = f'<{request.url.path}?{urlencode(params)}>; rel="next"'.encode("latin-1")
    return Page(Representation(b"[" + b",".join(fragments) + b"]"), link)


def _fields(request: Request) -> frozenset[str] | None:
    """``fields=slot_id,remaining``: only these keys per slot (slot_id always)."""
    values = request.query_params.getlist("fields")
    if not values:
        return None
    names = {name.strip() for value in values for name in value.split(",")}
    for name in sorted(names):
        if name not in SLOT_FIELDS:
            raise Problem(
                "bad-request",
                f"fields: unknown field {name[:64]!r}; known fields: {', '.join(SLOT_FIELDS)}",
            )
    names.add("slot_id")
    return None if len(names) == len(SLOT_FIELDS) else frozenset(names)


def _decode_after(cursor: str) -> int:
    raw = decode_cursor(cursor)
    if raw[:1] == "s" and raw[1:].isascii() and raw[1:].isdigit() and len(raw) <= 20:
        return int(raw[1:])
    raise bad_cursor()


def _filters(request: Request) -> tuple[int, int, Keep | None]:
    q = request.query_params
    ctx: AppContext = request.app.state.ctx
    max_limit = ctx.settings.availability_page_limit
    limit = query_limit(request, default=max_limit, maximum=max_limit)
    after = _decode_after(q["cursor"]) if "cursor" in q else 0
    start = parse_datetime(q["from"], "from", slug="bad-request") if "from" in q else None
    end = parse_datetime(q["to"], "to", slug="bad-request") if "to" in q else None
    available = q.get("available")
    if available not in (None, "true", "false"):
        raise Problem("bad-request", "available must be true or false")
    if start is None and end is None and available is None:
        return after, limit, None

    def keep(slot: Slot) -> bool:
        if available == "true" and slot.remaining <= 0:
            return False
        if available == "false" and slot.remaining > 0:
            return False
        if start is not None or end is not None:
            if slot.starts_at is None:
                return False
            at = datetime.fromisoformat(slot.starts_at)
            if (start is not None and at < start) or (end is not None and at >= end):
                return False
        return True

    return after, limit, keep
