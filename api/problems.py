"""RFC 9457 problem details: the one place engine errors become HTTP answers."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

import engine

__all__ = ["PROBLEM_TYPES", "Problem", "engine_problem", "problem_response"]

PROBLEM_MEDIA_TYPE = "application/problem+json"

# slug -> (status, title). The OpenAPI document lists these as well.
PROBLEM_TYPES: dict[str, tuple[int, str]] = {
    "bad-request": (400, "Bad request"),
    "invalid-idempotency-key": (400, "Missing or malformed Idempotency-Key"),
    "unauthorized": (401, "Authentication required"),
    "invalid-credentials": (401, "Invalid email or password"),
    "forbidden": (403, "Forbidden"),
    "not-found": (404, "Not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "slot-exists": (409, "Slot already exists"),
    "slot-closed": (409, "Slot is closed"),
    "slot-archived": (409, "Slot is over and archived; it and its holds are read-only"),
    "capacity-exhausted": (409, "Not enough remaining capacity"),
    "capacity-below-committed": (409, "Capacity below what is held and confirmed"),
    "user-hold-limit": (409, "Too many units held on this slot"),
    "hold-cancelled": (409, "Hold was cancelled"),
    "waiting-limit": (409, "Too many waitlist entries on this slot"),
    "hold-confirmed": (409, "Hold is confirmed"),
    "extension-limit": (409, "Hold cannot be extended further"),
    "confirm-mismatch": (409, "Hold was confirmed with another quantity"),
    "hold-expired": (410, "Hold has expired"),
    "group-refused": (409, "An item of the group cannot be held; nothing was held"),
    "group-member": (409, "Hold is a member of a group; change the group"),
    "group-cancelled": (409, "Group was cancelled"),
    "group-expired": (410, "Group has expired"),
    "payload-too-large": (413, "Request body too large"),
    "unsupported-media-type": (415, "Request body must be JSON"),
    "validation-error": (422, "Request body is invalid"),
    "idempotency-mismatch": (422, "Idempotency-Key reused with a different request"),
    "rate-limited": (429, "Too many requests"),
    "internal-error": (500, "Internal error"),
    "backend-unavailable": (503, "A backing service is unavailable"),
    "state-unavailable": (503, "Reservation state is being rebuilt"),
    "overloaded": (503, "Too many logins at once"),
}


def problem_type_uri(slug: str) -> str:
    return f"/problems/{slug}"


class Problem(Exception):
    """Raise anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        slug: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.slug = slug
        self.status, self.title = PROBLEM_TYPES[slug]
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {
            "type": problem_type_uri(self.slug),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }

    def response(self) -> Response:
        return Response(
            orjson.dumps(self.body()),
            status_code=self.status,
            headers=self.headers,
            media_type=PROBLEM_MEDIA_TYPE,
        )


def engine_problem(exc: engine.EngineError) -> Problem:
    """Map an engine refusal to its problem; details never name a Redis key."""
    match exc:
        case engine.SlotNotFound():
            return Problem("not-found", f"slot {exc.slot_id} does not exist")
        case engine.HoldNotFound() | engine.HoldArchived():
            return Problem("not-found", "hold not found")
        case engine.EntryNotFound() | engine.EntryArchived():
            return Problem("not-found", "waitlist entry not found")
        case engine.WaitingLimit():
            return Problem(
                "waiting-limit",
                f"you already wait {exc.waiting} times on slot {exc.slot_id}; at most {exc.limit}",
                waiting=exc.waiting,
                limit=exc.limit,
            )
        case engine.SlotExists():
            return Problem("slot-exists", f"slot {exc.slot_id} already exists")
        case engine.SlotArchived():
            what = f"hold {exc.hold_id} of slot" if exc.hold_id else "slot"
            return Problem(
                "slot-archived",
                f"{what} {exc.slot_id} is archived: it is over and can no longer change",
                slot_id=exc.slot_id,
            )
        case engine.SlotClosed():
            return Problem("slot-closed", f"slot {exc.slot_id} is closed to new holds")
        case engine.CapacityExhausted():
            return Problem(
                "capacity-exhausted",
                f"slot {exc.slot_id} has {exc.remaining} remaining",
                remaining=exc.remaining,
            )
        case engine.CapacityBelowCommitted():
            return Problem(
                "capacity-below-committed",
                f"slot {exc.slot_id} already has {exc.committed} held or confirmed",
                committed=exc.committed,
            )
        case engine.UserHoldLimit():
            return Problem(
                "user-hold-limit",
                f"you already hold {exc.held} on slot {exc.slot_id}; at most {exc.limit}",
                held=exc.held,
                limit=exc.limit,
            )
        case engine.IdempotencyMismatch():
            return Problem(
                "idempotency-mismatch",
                f"this Idempotency-Key was first used with quantity {exc.quantity}",
                quantity=exc.quantity,
            )
        case engine.HoldExpired():
            return Problem("hold-expired", f"hold {exc.hold.hold_id} has expired")
        case engine.HoldCancelled():
            return Problem("hold-cancelled", f"hold {exc.hold.hold_id} was cancelled")
        case engine.GroupNotFound():
            return Problem("not-found", "group not found")
        case engine.GroupRefused():
            cause = engine_problem(exc.cause)
            return Problem(
                "group-refused",
                f"item {exc.index} (slot {exc.slot_id}): {cause.detail}; nothing was held",
                item={"index": exc.index, "slot_id": exc.slot_id},
                reason=cause.slug,
                **cause.extra,
            )
        case engine.HoldInGroup():
            return Problem(
                "group-member",
                f"hold {exc.hold.hold_id} is a member of group {exc.group_id}:"
                f" confirm or cancel the group",
                group_id=exc.group_id,
            )
        case engine.GroupExpired():
            return Problem("group-expired", f"group {exc.group.group_id} has expired")
        case engine.GroupCancelled():
            return Problem("group-cancelled", f"group {exc.group.group_id} was cancelled")
        case engine.GroupIdempotencyMismatch():
            return Problem(
                "idempotency-mismatch",
                "this Idempotency-Key was first used for a group of other items",
                group_id=exc.group.group_id,
            )
        case engine.HoldConfirmed():
            return Problem("hold-confirmed", f"hold {exc.hold.hold_id} is already confirmed")
        case engine.ExtensionLimit():
            from .http import iso_ms  # api/http.py imports this module

            return Problem(
                "extension-limit",
                f"hold {exc.hold_id} was extended {exc.extensions} times; it may not be"
                " extended again, nor past its longest life",
                extensions=exc.extensions,
                latest_expires_at=iso_ms(exc.latest_expires_at_ms),
            )
        case engine.ConfirmMismatch():
            return Problem(
                "confirm-mismatch",
                f"hold {exc.hold.hold_id} was confirmed with quantity {exc.hold.quantity}",
                quantity=exc.hold.quantity,
            )
        case engine.QuantityTooLarge():
            return Problem(
                "validation-error",
                f"quantity must be from 1 to the hold's quantity, {exc.held}",
                held=exc.held,
            )
        case engine.StateUnavailable():
            return Problem(
                "state-unavailable",
                "reservation state is being rebuilt; retry shortly",
                headers={"Retry-After": "1"},
            )
        case engine.NotReplicated():
            return Problem(
                "backend-unavailable",
                f"the change was made but only {exc.acknowledged} of {exc.wanted} replicas"
                " have it yet; retry with the same Idempotency-Key or hold id to complete it",
                headers={"Retry-After": "1"},
            )
        case engine.BackendUnavailable():
            return Problem(
                "backend-unavailable",
                "the reservation store is unavailable; retry shortly",
                headers={"Retry-After": "1"},
            )
    return Problem("internal-error", "unexpected engine error")


async def problem_response(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for Problem and engine errors."""
    if isinstance(exc, Problem):
        return exc.response()
    if isinstance(exc, engine.EngineError):
        return engine_problem(exc).response()
    raise exc
