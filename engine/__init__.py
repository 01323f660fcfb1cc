"""slotkeeper's reservation engine: the Redis key schema, the Lua scripts, typed results."""

from .engine import Engine
from .errors import (
    BackendUnavailable,
    CapacityBelowCommitted,
    CapacityExhausted,
    EngineError,
    EntryArchived,
    EntryNotFound,
    HoldArchived,
    HoldCancelled,
    HoldExpired,
    HoldNotFound,
    IdempotencyMismatch,
    NotReplicated,
    SlotClosed,
    SlotExists,
    SlotNotFound,
    StateUnavailable,
    UserHoldLimit,
    WaitingLimit,
)
from .keys import KeySchema, new_hold_id, slot_of_hold
from .models import Hold, HoldStatus, Outcome, Slot, SlotEvent, SlotState
from .settings import EngineSettings
from .waitlist_models import WaitEntry, Waiting, WaitStatus

__all__ = [
    "BackendUnavailable",
    "CapacityBelowCommitted",
    "CapacityExhausted",
    "Engine",
    "EngineError",
    "EngineSettings",
    "EntryArchived",
    "EntryNotFound",
    "Hold",
    "HoldArchived",
    "HoldCancelled",
    "HoldExpired",
    "HoldNotFound",
    "HoldStatus",
    "IdempotencyMismatch",
    "KeySchema",
    "NotReplicated",
    "Outcome",
    "Slot",
    "SlotClosed",
    "SlotEvent",
    "SlotExists",
    "SlotNotFound",
    "SlotState",
    "StateUnavailable",
    "UserHoldLimit",
    "WaitEntry",
    "WaitStatus",
    "Waiting",
    "WaitingLimit",
    "new_hold_id",
    "slot_of_hold",
]
