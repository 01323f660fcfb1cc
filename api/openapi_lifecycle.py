"""OpenAPI for confirm (whole or partial), extend and batches (merged into
api/openapi.py's document)."""

from __future__ import annotations

from typing import Any

from .openapi import _SCHEMAS
from .openapi_parts import json_body as _json
from .openapi_parts import op as _op
from .openapi_parts import problems as _problems
from .openapi_parts import ref as _ref

__all__ = ["LIFECYCLE_SCHEMAS", "lifecycle_paths"]

_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_AUTH = ("unauthorized", "forbidden", "backend-unavailable")
_BODY = ("payload-too-large", "unsupported-media-type", "validation-error")
_HOLD_ID = {"name": "hold_id", "in": "path", "required": True, "schema": {"type": "string"}}
_POSITIVE = {"type": "integer", "minimum": 1}

LIFECYCLE_SCHEMAS: dict[str, Any] = {
    "Hold": {
        **_SCHEMAS["Hold"],
        "properties": {
            **_SCHEMAS["Hold"]["properties"],
            "extensions": {
                "type": "integer",
                "minimum": 1,
                "description": "how often the hold was extended; absent if never",
            },
        },
    },
    "ConfirmRequest": {
        "type": "object",
        "additionalProperties": False,
        "description": "No body (or no quantity) confirms the whole hold; a quantity k"
        " confirms k and gives the rest back to the slot at once.",
        "properties": {"quantity": _POSITIVE},
    },
    "BatchRequest": {
        "type": "object",
        "required": ["items"],
        "additionalProperties": False,
        "properties": {
            "items": {
                "type": "array",
                "minItems": 1,
                "description": "at most SLOTKEEPER_MAX_BATCH items",
                "items": {
                    "type": "object",
                    "required": ["slot_id", "idempotency_key"],
                    "additionalProperties": False,
                    "properties": {
                        "slot_id": _POSITIVE,
                        "quantity": _POSITIVE,
                        "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 255},
                        "user_id": {
                            **_POSITIVE,
                            "description": "admin tokens only: the end user the hold is for",
                        },
                    },
                },
            }
        },
    },
    "BatchResult": {
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {
                "type": "array",
                "description": "one per item, in order",
                "items": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": {"enum": [201, 404, 409, 422, 429, 503]},
                        "hold": _ref("Hold"),
                        "replayed": {"const": True},
                        "problem": _ref("Problem"),
                    },
                },
            }
        },
    },
}


def lifecycle_paths() -> dict[str, Any]:
    hold_ok = _json(_ref("Hold"), "The hold as it is now")
    return {
        "/holds/{hold_id}/extend": {
            "post": _op(
                "Give a live hold a fresh lifetime from now, within its caps (owner)",
                {
                    "200": hold_ok,
                    **_problems(
                        "not-found",
                        "extension-limit",
                        "hold-confirmed",
                        "hold-cancelled",
                        "hold-expired",
                        "slot-archived",
                        "state-unavailable",
                        *_AUTH,
                    ),
                },
                security=_BEARER,
                parameters=[_HOLD_ID],
            )
        },
        "/holds/{hold_id}/confirm": {
            "post": _op(
                "Confirm a live hold, all of it or a part (the rest returns to the slot);"
                " a repeat with the same quantity answers the same. Answered once"
                " PostgreSQL has it (503 Retry-After when it cannot be reached: retry),"
                " refused if the slot is fully confirmed there",
                {
                    "200": hold_ok,
                    **_problems(
                        "not-found",
                        "hold-cancelled",
                        "hold-expired",
                        "capacity-exhausted",
                        "confirm-mismatch",
                        "slot-archived",
                        "state-unavailable",
                        *_BODY,
                        *_AUTH,
                    ),
                },
                security=_BEARER,
                parameters=[_HOLD_ID],
                requestBody={
                    "required": False,
                    "content": {"application/json": {"schema": _ref("ConfirmRequest")}},
                },
            )
        },
        "/holds/batch": {
            "post": _op(
                "Many holds in one request, each judged on its own; one result per item",
                {
                    "200": _json(_ref("BatchResult"), "One result per item, in order"),
                    **_problems(*_BODY, *_AUTH),
                },
                security=_BEARER,
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": _ref("BatchRequest")}},
                },
            )
        },
    }
