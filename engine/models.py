"""Typed results of the engine."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson

__all__ = ["Hold", "HoldStatus", "Outcome", "Slot", "SlotEvent", "SlotState"]

HoldStatus = Literal["held", "confirmed", "cancelled", "expired"]
SlotState = Literal["open", "closed"]


@dataclass(frozen=True, slots=True)
class Hold:
    hold_id: str
    slot_id: int
    user_id: str
    quantity: int
    status: HoldStatus
    created_at_ms: int
    expires_at_ms: int
    version: int
    # Known from the durable record only: Redis keeps the key's record, not the key
    # on the hold (lua/lib.lua), so holds read from Redis leave it empty.
    idempotency_key: str = ""
    confirmed_at_ms: int | None = None
    cancelled_at_ms: int | None = None
    expired_at_ms: int | None = None
    extensions: int = 0
    group_id: str = ""  # the hold group it is a member of ('' : a single hold)

    @classmethod
    def from_stored(cls, raw: bytes | str, hold_id: str | None = None) -> Hold:
        """Decode the compact JSON the scripts emit (lua/lib.lua); a stored record
        has no id of its own (it is the hash field), so pass ``hold_id`` then."""
        d = orjson.loads(raw)
        return cls(
            hold_id=hold_id if hold_id is not None else d["i"],
            slot_id=int(d["s"]) if "s" in d else int((hold_id or "").partition("-")[0]),
            user_id=d["u"],
            quantity=int(d["q"]),
            status=d["st"],
            created_at_ms=int(d["c"]),
            expires_at_ms=int(d["e"]),
            version=int(d["v"]),
            confirmed_at_ms=_opt_int(d.get("cf")),
            cancelled_at_ms=_opt_int(d.get("ca")),
            expired_at_ms=_opt_int(d.get("xa")),
            extensions=int(d.get("xn", 0)),
            group_id=str(d.get("g") or ""),
        )

    @classmethod
    def from_event(cls, raw: bytes | str) -> Hold:
        """Decode a hold event of the stream (the stored form plus i, s and, on the
        event that creates the hold, k, the idempotency key)."""
        hold = cls.from_stored(raw)
        key = orjson.loads(raw).get("k")
        return hold if not key else replace(hold, idempotency_key=str(key))

    @property
    def changed_at_ms(self) -> int | None:
        """When the hold reached its current status (None: a malformed record)."""
        return {
            "held": self.created_at_ms,
            "confirmed": self.confirmed_at_ms,
            "cancelled": self.cancelled_at_ms,
            "expired": self.expired_at_ms,
        }[self.status]

    def to_stored(self) -> dict[str, Any]:
        """The event form (with id and key), as load_partition.lua expects it."""
        d: dict[str, Any] = {
            "i": self.hold_id,
            "s": str(self.slot_id),
            "u": self.user_id,
            "q": self.quantity,
            "st": self.status,
            "c": self.created_at_ms,
            "e": self.expires_at_ms,
            "v": self.version,
            "k": self.idempotency_key,
        }
        for name, value in (
            ("cf", self.confirmed_at_ms),
            ("ca", self.cancelled_at_ms),
            ("xa", self.expired_at_ms),
        ):
            if value is not None:
                d[name] = value
        if self.extensions:
            d["xn"] = self.extensions
        if self.group_id:
            d["g"] = self.group_id
        return d


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True, slots=True)
class Slot:
    slot_id: int
    capacity: int
    remaining: int
    held: int
    confirmed: int
    state: SlotState = "open"
    label: str | None = None
    starts_at: str | None = None
    ends_at: str | None = None

    @property
    def attributes(self) -> dict[str, str]:
        """label / starts_at / ends_at, only those set."""
        attrs = {"label": self.label, "starts_at": self.starts_at, "ends_at": self.ends_at}
        return {k: v for k, v in attrs.items() if v is not None}


@dataclass(frozen=True, slots=True)
class Outcome:
    """A command's answer: the hold as it is now, and whether this call changed it.

    ``changed`` is False for a replayed hold, a second confirm or a second cancel.
    A confirm or cancel that changed the hold also gives the event it appended
    (its JSON, with the partition's sequence) and the event's stream entry id,
    so the caller can write the change through to PostgreSQL.
    """

    hold: Hold
    changed: bool
    event: bytes | None = None
    entry_id: str | None = None


@dataclass(frozen=True, slots=True)
class SlotEvent:
    """A slot event of the stream (lua/upsert_slot.lua): the slot as it became, and when."""

    slot: Slot
    at_ms: int

    @classmethod
    def decode(cls, raw: bytes | str) -> SlotEvent:
        d = orjson.loads(raw)
        attrs = orjson.loads(d["meta"]) if d.get("meta") else {}
        slot = Slot(
            slot_id=int(d["id"]),
            capacity=int(d["cap"]),
            remaining=int(d.get("rem", d["cap"])),
            held=int(d.get("held", 0)),
            confirmed=int(d.get("conf", 0)),
            state=d["state"],
            label=attrs.get("label"),
            starts_at=attrs.get("starts_at"),
            ends_at=attrs.get("ends_at"),
        )
        return cls(slot, int(d["t"]))
