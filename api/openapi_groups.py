"""OpenAPI for hold groups (merged into api/openapi.py's document)."""

from __future__ import annotations

from typing import Any

from .openapi_parts import AUTH as _AUTH
from .openapi_parts import TIME as _TIME
from .openapi_parts import json_body as _json
from .openapi_parts import op as _op
from .openapi_parts import problems as _problems
from .openapi_parts import ref as _ref

__all__ = ["GROUP_SCHEMAS", "with_groups"]

_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_GROUP_ID = {"name": "group_id", "in": "path", "required": True, "schema": {"type": "string"}}
_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "1 to 255 printable ASCII characters; scoped to the caller. A replay"
    " answers the same group with `Idempotent-Replayed: true`",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}

GROUP_SCHEMAS: dict[str, Any] = {
    "GroupRequest": {
        "type": "object",
        "required": ["items"],
        "additionalProperties": False,
        "properties": {
            "items": {
                "type": "array",
                "minItems": 1,
                "description": "at most SLOTKEEPER_MAX_GROUP_ITEMS (default 10), one per slot",
                "items": {
                    "type": "object",
                    "required": ["slot_id"],
                    "additionalProperties": False,
                    "properties": {
                        "slot_id": {"type": "integer", "minimum": 1},
                        "quantity": {"type": "integer", "minimum": 1, "default": 1},
                    },
                },
            },
            "mode": {"enum": ["all"], "default": "all"},
        },
    },
    "Group": {
        "type": "object",
        "description": "Every member shares the group's expires_at and changes with it.",
        "required": ["group_id", "user_id", "status", "created_at", "expires_at", "holds"],
        "properties": {
            "group_id": {"type": "string"},
            "user_id": {"type": ["integer", "string"]},
            "status": {
                "enum": ["held", "confirmed", "cancelled", "expired", "confirming", "cancelling"],
                "description": "confirming/cancelling: a confirm or cancel under way (or left"
                " half-way by a process that died; the worker finishes it)",
            },
            "created_at": _TIME,
            "expires_at": _TIME,
            "confirmed_at": _TIME,
            "cancelled_at": _TIME,
            "holds": {"type": "array", "items": _ref("Hold"), "description": "in item order"},
        },
    },
}


def _paths() -> dict[str, Any]:
    ok = _json(_ref("Group"), "The group")
    read_errors = _problems("not-found", "state-unavailable", *_AUTH)
    return {
        "/holds": {
            "post": _op(
                "Hold every item of a group, or none (all or nothing across slots)",
                {
                    "201": {
                        **_json(_ref("Group"), "The group, held (or replayed)"),
                        "headers": {
                            "Location": {"schema": {"type": "string"}},
                            "Idempotent-Replayed": {"schema": {"type": "string"}},
                        },
                    },
                    **_problems(
                        "invalid-idempotency-key",
                        "group-refused",
                        "payload-too-large",
                        "unsupported-media-type",
                        "validation-error",
                        "idempotency-mismatch",
                        "rate-limited",
                        "state-unavailable",
                        *_AUTH,
                    ),
                },
                security=_BEARER,
                parameters=[_KEY],
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": _ref("GroupRequest")}},
                },
            )
        },
        "/holds/groups/{group_id}": {
            "get": _op(
                "A group with its members, to its owner or an admin",
                {"200": ok, **read_errors},
                security=_BEARER,
                parameters=[_GROUP_ID],
            ),
            "delete": _op(
                "Cancel every member (held or confirmed); their quantity returns; idempotent",
                {"200": ok, **_problems("slot-archived"), **read_errors},
                security=_BEARER,
                parameters=[_GROUP_ID],
            ),
        },
        "/holds/groups/{group_id}/confirm": {
            "post": _op(
                "Confirm every member, or none: 410 when the group expired (or has less than"
                " twice SLOTKEEPER_GROUP_PENDING_MS left), 409 when it was cancelled",
                {"200": ok, **_problems("group-cancelled", "group-expired"), **read_errors},
                security=_BEARER,
                parameters=[_GROUP_ID],
            )
        },
    }


def with_groups(paths: dict[str, Any]) -> dict[str, Any]:
    """``paths`` with the group operations added (per method: /holds has GET already),
    and the single-hold changes' 409 for a group member."""
    merged = {path: dict(ops) for path, ops in paths.items()}
    for path, ops in _paths().items():
        merged.setdefault(path, {}).update(ops)
    member = _problems("group-member")["409"]
    for path, method in (("/holds/{hold_id}", "delete"), ("/holds/{hold_id}/confirm", "post")):
        op = merged.get(path, {}).get(method)
        if op is not None:
            responses = dict(op["responses"])
            known = responses.get("409")
            if known is None:
                responses["409"] = member
            else:
                text = f"{known['description']}; {member['description']}"
                responses["409"] = {**known, "description": text}
            merged[path][method] = {**op, "responses": responses}
    return merged
