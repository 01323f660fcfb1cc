"""slotkeeper's reservation engine: the Redis key schema, the Lua scripts, typed results."""

from .engine import Engine
from .errors import (
    BackendUnavailable,
    CapacityBelowCommitted,
    CapacityExhausted,
    ConfirmMismatch,
    EngineError,
    ExtensionLimit,
    HoldArchived,
    HoldCancelled,
    HoldConfirmed,
    HoldExpired,
    HoldNotFound,
    IdempotencyMismatch,
    QuantityTooLarge,
    SlotClosed,
    SlotExists,
    SlotNotFound,
    StateUnavailable,
    UserHoldLimit,
)
from .keys import KeySchema, new_hold_id, slot_of_hold
from .models import Hold, HoldStatus, Outcome, Slot, SlotEvent, SlotState
from .settings import EngineSettings

__all__ = [
    "BackendUnavailable",
    "CapacityBelowCommitted",
    "CapacityExhausted",
    "ConfirmMismatch",
    "Engine",
    "EngineError",
    "EngineSettings",
    "ExtensionLimit",
    "Hold",
    "HoldArchived",
    "HoldCancelled",
    "HoldConfirmed",
    "HoldExpired",
    "HoldNotFound",
    "HoldStatus",
    "IdempotencyMismatch",
    "KeySchema",
    "Outcome",
    "QuantityTooLarge",
    "Slot",
    "SlotClosed",
    "SlotEvent",
    "SlotExists",
    "SlotNotFound",
    "SlotState",
    "StateUnavailable",
    "UserHoldLimit",
    "new_hold_id",
    "slot_of_hold",
]
