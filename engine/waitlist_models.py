"""Typed waitlist entries (lua/lib.lua describes the stored form)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson

from .models import Hold

__all__ = ["WaitEntry", "WaitStatus", "Waiting"]

WaitStatus = Literal["waiting", "offered", "left", "lapsed"]


@dataclass(frozen=True, slots=True)
class WaitEntry:
    entry_id: str
    slot_id: int
    user_id: str
    quantity: int
    status: WaitStatus
    joined_at_ms: int
    lapses_at_ms: int
    seq: int  # the partition's join counter: the order of the line
    version: int
    idempotency_key: str = ""
    offered_at_ms: int | None = None
    left_at_ms: int | None = None
    lapsed_at_ms: int | None = None
    hold_id: str | None = None
    # Read-time extras: 1-based place in line while waiting, the offer's hold.
    position: int = 0
    hold: Hold | None = None

    @classmethod
    def from_stored(cls, raw: bytes | str, entry_id: str | None = None) -> WaitEntry:
        d = orjson.loads(raw)
        eid = entry_id if entry_id is not None else str(d["i"])
        return cls(
            entry_id=eid,
            slot_id=int(eid.partition("-")[0]),
            user_id=d["u"],
            quantity=int(d["q"]),
            status=d["st"],
            joined_at_ms=int(d["c"]),
            lapses_at_ms=int(d["e"]),
            seq=int(d["n"]),
            version=int(d["v"]),
            idempotency_key=str(d.get("k") or ""),
            offered_at_ms=_opt_int(d.get("oa")),
            left_at_ms=_opt_int(d.get("la")),
            lapsed_at_ms=_opt_int(d.get("xa")),
            hold_id=d.get("h"),
        )

    def with_reads(self, position: int, hold: Hold | None) -> WaitEntry:
        return replace(self, position=position, hold=hold)

    @property
    def changed_at_ms(self) -> int:
        return {
            "waiting": self.joined_at_ms,
            "offered": self.offered_at_ms,
            "left": self.left_at_ms,
            "lapsed": self.lapsed_at_ms,
        }[self.status] or self.joined_at_ms

    def to_stored(self) -> dict[str, Any]:
        """The event form (with id, slot and key), as load_partition.lua expects it."""
        d: dict[str, Any] = {
            "i": self.entry_id,
            "s": str(self.slot_id),
            "u": self.user_id,
            "q": self.quantity,
            "st": self.status,
            "c": self.joined_at_ms,
            "e": self.lapses_at_ms,
            "n": self.seq,
            "v": self.version,
            "k": self.idempotency_key,
        }
        for name, value in (
            ("oa", self.offered_at_ms),
            ("la", self.left_at_ms),
            ("xa", self.lapsed_at_ms),
            ("h", self.hold_id),
        ):
            if value is not None:
                d[name] = value
        return d


@dataclass(frozen=True, slots=True)
class Waiting:
    """Who waits for one slot: entries and the units they ask for."""

    entries: int = 0
    units: int = 0


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)
