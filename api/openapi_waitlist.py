"""OpenAPI for the waitlist routes (merged into api/openapi.py's document)."""

from __future__ import annotations

from typing import Any

from .openapi_parts import AUTH as _AUTH
from .openapi_parts import BEARER as _BEARER
from .openapi_parts import BODY as _BODY
from .openapi_parts import SLOT_ID as _SLOT_ID
from .openapi_parts import TIME as _TIME
from .openapi_parts import json_body as _json
from .openapi_parts import op as _op
from .openapi_parts import problems as _problems
from .openapi_parts import ref as _ref

__all__ = ["WAITLIST_SCHEMAS", "waitlist_paths"]

_ENTRY_ID = {"name": "entry_id", "in": "path", "required": True, "schema": {"type": "string"}}
_IDEM = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}

WAITLIST_SCHEMAS: dict[str, Any] = {
    "WaitlistRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"quantity": {"type": "integer", "minimum": 1, "default": 1}},
    },
    "WaitlistEntry": {
        "type": "object",
        "description": "`position` (1 = next) while waiting; `hold_id` and `hold` once"
        " offered: the offer is a normal hold, confirmed or cancelled at /holds/{hold_id}.",
        "required": ["entry_id", "slot_id", "quantity", "status", "joined_at", "lapses_at"],
        "properties": {
            "entry_id": {"type": "string"},
            "slot_id": {"type": "integer"},
            "user_id": {"type": ["integer", "string"]},
            "quantity": {"type": "integer", "minimum": 1},
            "status": {"enum": ["waiting", "offered", "left", "lapsed"]},
            "position": {"type": "integer", "minimum": 1},
            "joined_at": _TIME,
            "lapses_at": _TIME,
            "offered_at": _TIME,
            "left_at": _TIME,
            "lapsed_at": _TIME,
            "hold_id": {"type": "string"},
            "hold": _ref("Hold"),
        },
    },
    "SlotWaiting": {
        "type": "object",
        "description": "`waiting` on GET /slots/{slot_id}: entries in line and the units they ask",
        "required": ["entries", "units"],
        "properties": {
            "entries": {"type": "integer", "minimum": 0},
            "units": {"type": "integer", "minimum": 0},
        },
    },
}


def waitlist_paths() -> dict[str, Any]:
    entry_ok = _json(_ref("WaitlistEntry"), "The entry as it is now")
    return {
        "/slots/{slot_id}/waitlist": {
            "post": _op(
                "Join the slot's waitlist; offered at once (status `offered`, with its hold)"
                " when the whole quantity fits and nobody waits ahead. The same"
                " Idempotency-Key replays the first entry",
                {
                    "201": {
                        **entry_ok,
                        "headers": {"Idempotent-Replayed": {"schema": {"const": "true"}}},
                    },
                    **_problems(
                        "bad-request",
                        "invalid-idempotency-key",
                        "not-found",
                        "slot-closed",
                        "waiting-limit",
                        "idempotency-mismatch",
                        "state-unavailable",
                        *_BODY,
                        *_AUTH,
                    ),
                },
                security=_BEARER,
                parameters=[_SLOT_ID, _IDEM],
                requestBody={
                    "required": False,
                    "content": {"application/json": {"schema": _ref("WaitlistRequest")}},
                },
            )
        },
        "/waitlist/{entry_id}": {
            "get": _op(
                "An entry (owner or admin): its place in line, or its offer",
                {"200": entry_ok, **_problems("not-found", "state-unavailable", *_AUTH)},
                security=_BEARER,
                parameters=[_ENTRY_ID],
            ),
            "delete": _op(
                "Leave the line (owner or admin); leaving again, or after an offer, changes"
                " nothing (an offer is given up by cancelling its hold)",
                {"200": entry_ok, **_problems("not-found", "state-unavailable", *_AUTH)},
                security=_BEARER,
                parameters=[_ENTRY_ID],
            ),
        },
    }
