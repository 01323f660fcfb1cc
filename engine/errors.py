"""Engine errors: a small tree, each carrying what a caller needs to answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Hold

__all__ = [
    "BackendUnavailable",
    "CapacityBelowCommitted",
    "CapacityExhausted",
    "ConfirmMismatch",
    "EngineError",
    "EntryArchived",
    "EntryNotFound",
    "ExtensionLimit",
    "HoldArchived",
    "HoldCancelled",
    "HoldConfirmed",
    "HoldExpired",
    "HoldInGroup",
    "HoldNotFound",
    "IdempotencyMismatch",
    "NotReplicated",
    "QuantityTooLarge",
    "SlotArchived",
    "SlotClosed",
    "SlotExists",
    "SlotNotFound",
    "StateUnavailable",
    "UserHoldLimit",
    "WaitingLimit",
]


class EngineError(Exception):
    """Base of every refusal the engine reports."""


class BackendUnavailable(EngineError):
    """Redis could not be reached in time; nothing is known to have changed."""


class StateUnavailable(EngineError):
    """The partition lost its state (no epoch marker): fail closed until rebuilt."""

    def __init__(self, partition: int) -> None:
        super().__init__(f"partition {partition} has no state; it must be rebuilt")
        self.partition = partition


class SlotNotFound(EngineError):
    def __init__(self, slot_id: int) -> None:
        super().__init__(f"slot {slot_id} does not exist")
        self.slot_id = slot_id


class SlotExists(EngineError):
    def __init__(self, slot_id: int) -> None:
        super().__init__(f"slot {slot_id} already exists")
        self.slot_id = slot_id


class SlotArchived(EngineError):
    """The slot is over and archived: PostgreSQL keeps it and its holds for reading,
    nothing changes them any more (sync/archive.py)."""

    def __init__(self, slot_id: int, hold_id: str = "") -> None:
        super().__init__(f"slot {slot_id} is archived")
        self.slot_id = slot_id
        self.hold_id = hold_id


class SlotClosed(EngineError):
    def __init__(self, slot_id: int) -> None:
        super().__init__(f"slot {slot_id} is closed")
        self.slot_id = slot_id


class CapacityExhausted(EngineError):
    def __init__(self, slot_id: int, remaining: int) -> None:
        super().__init__(f"slot {slot_id} has only {remaining} remaining")
        self.slot_id = slot_id
        self.remaining = remaining


class CapacityBelowCommitted(EngineError):
    """Capacity may not drop below what is already held + confirmed."""

    def __init__(self, slot_id: int, committed: int) -> None:
        super().__init__(f"slot {slot_id} has {committed} held or confirmed")
        self.slot_id = slot_id
        self.committed = committed


class UserHoldLimit(EngineError):
    def __init__(self, slot_id: int, held: int, limit: int) -> None:
        super().__init__(f"user already holds {held} of at most {limit} on slot {slot_id}")
        self.slot_id = slot_id
        self.held = held
        self.limit = limit


class IdempotencyMismatch(EngineError):
    """The key was first used with another quantity."""

    def __init__(self, slot_id: int, quantity: int) -> None:
        super().__init__(f"key was first used for quantity {quantity}")
        self.slot_id = slot_id
        self.quantity = quantity


class HoldArchived(EngineError):
    """A replayed key names a hold Redis no longer keeps; the durable record has it."""

    def __init__(self, hold_id: str) -> None:
        super().__init__(f"hold {hold_id} is only in the durable record")
        self.hold_id = hold_id


class HoldNotFound(EngineError):
    def __init__(self, hold_id: str) -> None:
        super().__init__("hold not found")
        self.hold_id = hold_id


class HoldExpired(EngineError):
    def __init__(self, hold: Hold) -> None:
        super().__init__(f"hold {hold.hold_id} expired")
        self.hold = hold


class HoldCancelled(EngineError):
    def __init__(self, hold: Hold) -> None:
        super().__init__(f"hold {hold.hold_id} was cancelled")
        self.hold = hold


class NotReplicated(EngineError):
    """The change was made on the primary, but WAIT did not see enough replicas
    have it in time. Retrying with the same key or hold id completes it."""

    def __init__(self, wanted: int, acknowledged: int) -> None:
        super().__init__(f"{acknowledged} of {wanted} replicas acknowledged the write")
        self.wanted = wanted
        self.acknowledged = acknowledged


class EntryNotFound(EngineError):
    def __init__(self, entry_id: str) -> None:
        super().__init__("waitlist entry not found")
        self.entry_id = entry_id


class WaitingLimit(EngineError):
    """The user already waits as often as allowed on this slot."""

    def __init__(self, slot_id: int, waiting: int, limit: int) -> None:
        super().__init__(f"user already has {waiting} of at most {limit} entries waiting")
        self.slot_id = slot_id
        self.waiting = waiting
        self.limit = limit


class EntryArchived(EngineError):
    """A replayed key names an entry Redis no longer keeps."""

    def __init__(self, entry_id: str) -> None:
        super().__init__(f"waitlist entry {entry_id} is only in the durable record")
        self.entry_id = entry_id


class HoldInGroup(EngineError):
    """A member of a hold group changes only with its group (engine/groups.py)."""

    def __init__(self, hold: Hold, group_id: str) -> None:
        super().__init__(f"hold {hold.hold_id} is a member of group {group_id}")
        self.hold = hold
        self.group_id = group_id


class HoldConfirmed(EngineError):
    """The hold is already a booking (it cannot be extended)."""

    def __init__(self, hold: Hold) -> None:
        super().__init__(f"hold {hold.hold_id} is confirmed")
        self.hold = hold


class ExtensionLimit(EngineError):
    """No more extensions, or one would pass the hold's longest life."""

    def __init__(self, hold_id: str, extensions: int, latest_expires_at_ms: int) -> None:
        super().__init__(f"hold {hold_id} cannot be extended (extended {extensions} times)")
        self.hold_id = hold_id
        self.extensions = extensions
        self.latest_expires_at_ms = latest_expires_at_ms


class ConfirmMismatch(EngineError):
    """The hold was confirmed before with another quantity."""

    def __init__(self, hold: Hold, quantity: int) -> None:
        super().__init__(f"hold {hold.hold_id} was confirmed with quantity {hold.quantity}")
        self.hold = hold
        self.quantity = quantity


class QuantityTooLarge(EngineError):
    """A partial confirm asked for more than the hold has."""

    def __init__(self, hold_id: str, held: int) -> None:
        super().__init__(f"hold {hold_id} holds only {held}")
        self.hold_id = hold_id
        self.held = held
