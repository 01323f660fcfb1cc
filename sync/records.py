"""PostgreSQL rows <-> engine records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine import Hold

__all__ = ["HOLD_COLUMNS", "hold_from_row", "ms", "unknown_key"]

HOLD_COLUMNS = (
    "hold_id, slot_id, user_id, quantity, status, idempotency_key, created_at, expires_at,"
    " confirmed_at, cancelled_at, expired_at, version"
)


def ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def hold_from_row(row: Any) -> Hold:
    return Hold(
        hold_id=row["hold_id"],
        slot_id=row["slot_id"],
        user_id=str(row["user_id"]),
        quantity=row["quantity"],
        status=row["status"],
        created_at_ms=int(row["created_at"].timestamp() * 1000),
        expires_at_ms=int(row["expires_at"].timestamp() * 1000),
        version=row["version"],
        idempotency_key=row["idempotency_key"],
        confirmed_at_ms=ms(row["confirmed_at"]),
        cancelled_at_ms=ms(row["cancelled_at"]),
        expired_at_ms=ms(row["expired_at"]),
    )


def unknown_key(hold_id: str) -> str:
    """Stands in for an idempotency key that is not at hand: Redis keeps the key's
    own record, not the key on the hold, and only the event that creates a hold
    carries it. Used only for holds PostgreSQL has not seen created."""
    return f"unknown:{hold_id}"
