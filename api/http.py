"""Request parsing and response rendering shared by the routes."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from engine import Hold, Slot

from .problems import Problem
from .user_ids import user_id_json

__all__ = [
    "MAX_ID",
    "bad_cursor",
    "decode_cursor",
    "encode_cursor",
    "hold_body",
    "iso_ms",
    "json_response",
    "parse_datetime",
    "path_id",
    "query_limit",
    "read_json",
    "slot_body",
]

MAX_ID = 2**63 - 1  # PostgreSQL bigint
_JSON = "application/json"


_CONTENT_TYPE = (b"content-type", _JSON.encode())


class _RenderedJSON(Response):
    """A JSON body already rendered, with its raw headers built directly: the same
    headers, in the same order, as ``Response(body, status, headers, media_type=_JSON)``
    without its general header handling (a few % of a small request's CPU)."""

    media_type = _JSON

    def __init__(self, body: bytes, status_code: int, raw: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        raw.append((b"content-length", b"%d" % len(body)))
        raw.append(_CONTENT_TYPE)
        self.raw_headers = raw


def json_response(
    body: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    if (
        status_code >= 200
        and status_code not in (204, 304)
        and not any(k in (b"content-length", b"content-type") for k, _ in raw)
    ):
        return _RenderedJSON(orjson.dumps(body), status_code, raw)
    return Response(orjson.dumps(body), status_code, headers, media_type=_JSON)


def query_limit(request: Request, *, default: int, maximum: int) -> int:
    """The ``limit`` query parameter: an integer from 1 to ``maximum``, else 400."""
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= maximum:
        raise Problem("bad-request", f"limit must be an integer from 1 to {maximum}")
    return int(raw)


def encode_cursor(position: str) -> str:
    """An opaque page cursor for ``position`` (each route chooses what it holds)."""
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise bad_cursor() from None


def bad_cursor() -> Problem:
    """The answer to a cursor this server did not give out."""
    return Problem("bad-request", "cursor is not one this server gave out")


def path_id(request: Request, name: str) -> int:
    """A positive integer path parameter, or a 400 that says what was wrong."""
    raw = request.path_params[name]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not 0 < int(raw) <= MAX_ID:
        raise Problem("bad-request", f"{name} must be a positive integer (at most {MAX_ID})")
    return int(raw)


async def read_json(request: Request, max_bytes: int, *, required: bool = True) -> Any:
    """The body as JSON, with 413 / 415 / 422 for oversized, non-JSON or malformed bodies."""
    length = request.headers.get("content-length")
    if length is not None and length.isascii() and length.isdigit() and int(length) > max_bytes:
        raise Problem("payload-too-large", f"the body may be at most {max_bytes} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise Problem("payload-too-large", f"the body may be at most {max_bytes} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        if required:
            raise Problem("validation-error", "a JSON object body is required")
        return None
    content_type = request.headers.get("content-type", _JSON).split(";")[0].strip().lower()
    if content_type != _JSON and not content_type.endswith("+json"):
        raise Problem("unsupported-media-type", "send the body as application/json")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Problem("validation-error", "the body is not valid JSON") from None


def parse_datetime(value: Any, name: str, *, slug: str = "validation-error") -> datetime:
    """ISO-8601 with an offset; naive times are refused (whose clock would they be?)."""
    if not isinstance(value, str):
        raise Problem(slug, f"{name} must be an ISO-8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise Problem(slug, f"{name} is not an ISO-8601 date-time: {value[:64]!r}") from None
    if parsed.tzinfo is None:
        raise Problem(slug, f"{name} must include a UTC offset, e.g. 2026-12-01T09:00:00+01:00")
    return parsed


# 2100-01-01. Beyond it ms / 1000 as a float loses microseconds, and the
# datetime path below (the reference) rounds differently: it answers there.
_MAX_MS = 4_102_444_800_000
_EPOCH = datetime(1970, 1, 1)
_MILLIS = [f"{n:03d}+00:00" for n in range(1000)]
# second since the epoch -> "YYYY-MM-DDTHH:MM:SS.": the holds of one second share it
_SECONDS: dict[int, str] = {}


def _second_prefix(second: int) -> str:
    if len(_SECONDS) >= 4096:
        _SECONDS.clear()
    prefix = _SECONDS[second] = f"{(_EPOCH + timedelta(seconds=second)).isoformat()}."
    return prefix


def iso_ms(ms: int | None) -> str | None:
    """Epoch milliseconds as ISO-8601 in UTC with milliseconds, the API's one format:
    ``2026-12-02T20:33:29.123+00:00``. Text cached per second, no datetime per call
    (a hold renders two or more of these); the same text as
    ``datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")``."""
    if ms is None:
        return None
    if not 0 <= ms < _MAX_MS:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    second, millis = divmod(ms, 1000)
    prefix = _SECONDS.get(second) or _second_prefix(second)
    return prefix + _MILLIS[millis]


def hold_body(hold: Hold) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hold_id": hold.hold_id,
        "slot_id": hold.slot_id,
        "user_id": user_id_json(hold.user_id),
        "quantity": hold.quantity,
        "status": hold.status,
        "created_at": iso_ms(hold.created_at_ms),
        "expires_at": iso_ms(hold.expires_at_ms),
    }
    for name, ms in (
        ("confirmed_at", hold.confirmed_at_ms),
        ("cancelled_at", hold.cancelled_at_ms),
        ("expired_at", hold.expired_at_ms),
    ):
        if ms is not None:
            body[name] = iso_ms(ms)
    if hold.extensions:
        body["extensions"] = hold.extensions
    return body


def slot_body(slot: Slot) -> dict[str, Any]:
    body: dict[str, Any] = {
        "slot_id": slot.slot_id,
        "capacity": slot.capacity,
        "remaining": slot.remaining,
        "state": slot.state,
    }
    body.update(slot.attributes)
    return body
