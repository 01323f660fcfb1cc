"""The OpenAPI 3.1 document: the truth about every route (a test walks both)."""

from __future__ import annotations

from functools import cache
from typing import Any

from .availability_routes import SLOT_FIELDS
from .openapi_parts import AUTH as _AUTH
from .openapi_parts import BEARER as _BEARER
from .openapi_parts import BODY as _BODY
from .openapi_parts import SLOT_ID as _SLOT_ID
from .openapi_parts import TIME as _TIME
from .openapi_parts import json_body as _json
from .openapi_parts import op as _op
from .openapi_parts import problems as _problems
from .openapi_parts import ref as _ref
from .problems import PROBLEM_TYPES, problem_type_uri

__all__ = ["openapi_document"]

_SLOT_PROPERTIES = {
    "slot_id": {"type": "integer"}, "capacity": {"type": "integer", "minimum": 0},
    "remaining": {"type": "integer", "minimum": 0}, "state": {"enum": ["open", "closed"]},
    "label": {"type": "string"}, "starts_at": _TIME, "ends_at": _TIME,
}  # fmt: skip

# GET /slots/availability: the list, its negotiated headers, fields=.
_SLOTS = {"type": "array", "items": {"anyOf": [_ref("Slot"), _ref("SlotFields")]}}
_HEADERS = {
    "ETag": {"schema": {"type": "string"}, "description": "strong, one per content coding"},
    "Link": {"schema": {"type": "string"}, "description": "next page"},
    "Vary": {"schema": {"const": "Accept-Encoding"}},
    "Content-Encoding": {"schema": {"const": "gzip"}, "description": "by Accept-Encoding q"},
}
_FIELDS = {
    "name": "fields", "in": "query", "style": "form", "explode": False,
    "description": "only these keys per slot (slot_id always); unknown name: 400",
    "schema": {"type": "array", "items": {"enum": list(SLOT_FIELDS)}},
}  # fmt: skip
_HOLD_ID = {"name": "hold_id", "in": "path", "required": True, "schema": {"type": "string"}}

_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details; extension members such as `remaining`.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "enum": [problem_type_uri(s) for s in PROBLEM_TYPES]},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "remaining": {"type": "integer"},
            "retry_after": {"type": "integer"},
        },
    },
    "Credentials": {
        "type": "object",
        "required": ["email", "password"],
        "properties": {"email": {"type": "string"}, "password": {"type": "string"}},
    },
    "Token": {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in"],
        "properties": {
            "access_token": {"type": "string"},
            "token_type": {"const": "Bearer"},
            "expires_in": {"type": "integer"},
        },
    },
    "Principal": {
        "type": "object",
        "required": ["user_id", "role", "expires_at"],
        "properties": {
            "user_id": {"type": "integer"},
            "role": {"enum": ["user", "admin"]},
            "expires_at": {"type": "integer", "description": "token expiry, Unix seconds"},
        },
    },
    "Slot": {
        "type": "object",
        "required": ["slot_id", "capacity", "remaining", "state"],
        "properties": _SLOT_PROPERTIES,
    },
    "SlotFields": {"type": "object", "required": ["slot_id"], "properties": _SLOT_PROPERTIES},
    "SlotCreate": {
        "type": "object",
        "required": ["capacity"],
        "additionalProperties": False,
        "properties": {
            "slot_id": {"type": "integer", "minimum": 1},
            "capacity": {"type": "integer", "minimum": 0, "maximum": 1_000_000_000},
            "state": {"enum": ["open", "closed"]},
            "label": {"type": ["string", "null"], "maxLength": 200},
            "starts_at": {**_TIME, "type": ["string", "null"]},
            "ends_at": {**_TIME, "type": ["string", "null"]},
        },
    },
    "SlotPatch": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "capacity": {"type": "integer", "minimum": 0, "maximum": 1_000_000_000},
            "state": {"enum": ["open", "closed"]},
            "label": {"type": ["string", "null"], "maxLength": 200},
            "starts_at": {**_TIME, "type": ["string", "null"]},
            "ends_at": {**_TIME, "type": ["string", "null"]},
        },
    },
    "HoldRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"quantity": {"type": "integer", "minimum": 1, "default": 1}},
    },
    "Hold": {
        "type": "object",
        "required": [
            "hold_id",
            "slot_id",
            "user_id",
            "quantity",
            "status",
            "created_at",
            "expires_at",
        ],
        "properties": {
            "hold_id": {"type": "string"},
            "slot_id": {"type": "integer"},
            "user_id": {"type": "integer"},
            "quantity": {"type": "integer", "minimum": 1},
            "status": {"enum": ["held", "confirmed", "cancelled", "expired"]},
            "created_at": _TIME,
            "expires_at": _TIME,
            "confirmed_at": _TIME,
            "cancelled_at": _TIME,
            "expired_at": _TIME,
        },
    },
    "Readiness": {
        "type": "object",
        "properties": {"status": {"enum": ["ready", "unavailable"]}, "checks": {"type": "object"}},
    },
}


def _login_op(*, query: bool = False) -> dict[str, Any]:
    if query:  # the original service's GET /login takes the credentials in the query
        carrier: dict[str, Any] = {
            "parameters": [
                {"name": "email", "in": "query", "required": True, "schema": {"type": "string"}},
                {"name": "password", "in": "query", "required": True, "schema": {"type": "string"}},
            ]
        }
    else:
        carrier = {
            "requestBody": {"content": {"application/json": {"schema": _ref("Credentials")}}}
        }
    return _op(
        "Exchange email and password for a bearer token",
        {
            "200": _json(_ref("Token"), "A token"),
            **_problems(
                "invalid-credentials", "rate-limited", *_BODY, "backend-unavailable", "overloaded"
            ),
        },
        **carrier,
    )


def _refresh_op() -> dict[str, Any]:
    return _op(
        "A new token for the current one (or one expired within the refresh window); "
        "the old one is revoked",
        {"200": _json(_ref("Token"), "A new token"), **_problems(*_AUTH)},
        security=_BEARER,
    )


def _paths() -> dict[str, Any]:
    hold_ok = _json(_ref("Hold"), "The hold")
    idem_header = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    }
    return {
        "/auth/login": {"post": _login_op()},
        "/auth/refresh": {"post": _refresh_op()},
        "/auth/whoami": {
            "get": _op(
                "Who the token says the caller is",
                {"200": _json(_ref("Principal"), "The caller"), **_problems(*_AUTH)},
                security=_BEARER,
            )
        },
        "/login": {"get": _login_op(query=True), "post": _login_op()},
        "/refresh": {"get": _refresh_op(), "post": _refresh_op()},
        "/slots/availability": {
            "get": _op(
                "Every slot with what is left, ordered by slot_id (cached, bounded staleness)",
                {
                    "200": {
                        **_json(_SLOTS, "Slots (fields=: only those keys)"),
                        "headers": _HEADERS,
                    },
                    "304": {"description": "Not modified (If-None-Match)"},
                    **_problems("bad-request", "state-unavailable", *_AUTH),
                },
                security=_BEARER,
                parameters=[
                    {"name": "from", "in": "query", "schema": _TIME},
                    {"name": "to", "in": "query", "schema": _TIME},
                    {"name": "available", "in": "query", "schema": {"enum": ["true", "false"]}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    _FIELDS,
                ],
            )
        },
        "/slots": {
            "post": _op(
                "Create a slot (admin)",
                {
                    "201": _json(_ref("Slot"), "Created"),
                    **_problems("forbidden", "slot-exists", "state-unavailable", *_BODY, *_AUTH),
                },
                security=_BEARER,
                requestBody={"content": {"application/json": {"schema": _ref("SlotCreate")}}},
            )
        },
        "/slots/{slot_id}": {
            "get": _op(
                "One slot's availability",
                {
                    "200": _json(_ref("Slot"), "The slot"),
                    **_problems("bad-request", "not-found", "state-unavailable", *_AUTH),
                },
                security=_BEARER,
                parameters=[_SLOT_ID],
            ),
            "patch": _op(
                "Change capacity, state or attributes (admin)",
                {
                    "200": _json(_ref("Slot"), "The slot"),
                    **_problems(
                        "bad-request",
                        "forbidden",
                        "not-found",
                        "capacity-below-committed",
                        "slot-archived",
                        "state-unavailable",
                        *_BODY,
                        *_AUTH,
                    ),
                },
                security=_BEARER,
                parameters=[_SLOT_ID],
                requestBody={"content": {"application/json": {"schema": _ref("SlotPatch")}}},
            ),
        },
        "/slots/{slot_id}/hold": {
            "post": _op(
                "Hold quantity on a slot; the same Idempotency-Key replays the first hold",
                {
                    "201": {
                        **hold_ok,
                        "headers": {"Idempotent-Replayed": {"schema": {"const": "true"}}},
                    },
                    **_problems(
                        "bad-request",
                        "invalid-idempotency-key",
                        "not-found",
                        "slot-closed",
                        "slot-archived",
                        "capacity-exhausted",
                        "user-hold-limit",
                        "idempotency-mismatch",
                        "rate-limited",
                        "state-unavailable",
                        *_BODY,
                        *_AUTH,
                    ),
                },
                security=_BEARER,
                parameters=[_SLOT_ID, idem_header],
                requestBody={
                    "required": False,
                    "content": {"application/json": {"schema": _ref("HoldRequest")}},
                },
            )
        },
        "/holds": {
            "get": _op(
                "The caller's holds, newest first (from the durable record)",
                {
                    "200": _json({"type": "array", "items": _ref("Hold")}, "Holds"),
                    **_problems("bad-request", *_AUTH),
                },
                security=_BEARER,
                parameters=[
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
            )
        },
        "/holds/{hold_id}": {
            "get": _op(
                "A hold, to its owner or an admin",
                {"200": hold_ok, **_problems("not-found", "state-unavailable", *_AUTH)},
                security=_BEARER,
                parameters=[_HOLD_ID],
            ),
            "delete": _op(
                "Cancel a hold or booking; its quantity returns to the slot",
                {
                    "200": hold_ok,
                    **_problems("not-found", "slot-archived", "state-unavailable", *_AUTH),
                },
                security=_BEARER,
                parameters=[_HOLD_ID],
            ),
        },
        "/healthz": {"get": _op("The process is alive", {"200": {"description": "alive"}})},
        "/readyz": {
            "get": _op(
                "Redis and PostgreSQL reachable, scripts loaded, no partition lost",
                {
                    "200": _json(_ref("Readiness"), "ready"),
                    "503": _json(_ref("Readiness"), "not ready, with details"),
                },
            )
        },
        "/metrics": {"get": _op("Prometheus metrics", {"200": {"description": "Prometheus text"}})},
        "/openapi.json": {"get": _op("This document", {"200": {"description": "OpenAPI 3.1"}})},
        "/docs": {"get": _op("Human-readable API page", {"200": {"description": "HTML"}})},
    }


@cache
def _document() -> dict[str, Any]:
    from . import openapi_feed as feed
    from . import openapi_groups as groups
    from . import openapi_lifecycle as lifecycle
    from . import openapi_waitlist as waitlist

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "slotkeeper",
            "version": "0.1.0",
            "description": "Slot reservation: hold, confirm, cancel; never oversell.",
        },
        "paths": groups.with_groups(
            {
                **_paths(),
                **feed.feed_paths(),
                **waitlist.waitlist_paths(),
                **lifecycle.lifecycle_paths(),
            }
        ),
        "components": {
            "schemas": {
                **_SCHEMAS,
                **feed.FEED_SCHEMAS,
                **waitlist.WAITLIST_SCHEMAS,
                **groups.GROUP_SCHEMAS,
                **lifecycle.LIFECYCLE_SCHEMAS,
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    return _document()
