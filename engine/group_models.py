"""Hold groups: typed results and refusals (engine/groups.py makes them)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from .errors import EngineError
from .models import Hold

__all__ = [
    "Group",
    "GroupCancelled",
    "GroupExpired",
    "GroupIdempotencyMismatch",
    "GroupItem",
    "GroupNotFound",
    "GroupOutcome",
    "GroupRefused",
    "GroupStatus",
    "Member",
    "new_group_id",
    "slot_of_group",
]

GroupStatus = Literal["held", "confirmed", "cancelled", "expired", "confirming", "cancelling"]


@dataclass(frozen=True, slots=True)
class GroupItem:
    slot_id: int
    quantity: int = 1


@dataclass(frozen=True, slots=True)
class Member:
    hold_id: str
    slot_id: int
    quantity: int


@dataclass(frozen=True, slots=True)
class Group:
    group_id: str
    user_id: str
    status: GroupStatus
    created_at_ms: int
    expires_at_ms: int
    version: int
    members: tuple[Member, ...]
    # The members as holds, in item order (filled when the group is read whole).
    holds: tuple[Hold, ...] = ()
    confirmed_at_ms: int | None = None
    cancelled_at_ms: int | None = None
    idempotency_key: str = ""

    @classmethod
    def decode(cls, raw: bytes | str, status: str | None = None) -> Group:
        """The group JSON of lua/group_home.lua; ``status`` as the script read it."""
        d = orjson.loads(raw)
        return cls(
            group_id=d["i"],
            user_id=d["u"],
            status=status or d["st"],  # type: ignore[arg-type]
            created_at_ms=int(d["c"]),
            expires_at_ms=int(d["e"]),
            version=int(d["v"]),
            members=tuple(Member(str(m[0]), int(m[1]), int(m[2])) for m in d["m"]),
            confirmed_at_ms=_opt_int(d.get("cf")),
            cancelled_at_ms=_opt_int(d.get("ca")),
            idempotency_key=str(d.get("k", "")),
        )

    def encode(self) -> bytes:
        """The group JSON of lua/group_home.lua (a rebuild stores it, sync/group_restore.py)."""
        d: dict[str, Any] = {
            "i": self.group_id, "u": self.user_id, "st": self.status,
            "c": self.created_at_ms, "e": self.expires_at_ms, "v": self.version,
            "k": self.idempotency_key,
            "m": [[m.hold_id, m.slot_id, m.quantity] for m in self.members],
        }  # fmt: skip
        for name, value in (("cf", self.confirmed_at_ms), ("ca", self.cancelled_at_ms)):
            if value is not None:
                d[name] = value
        return orjson.dumps(d)

    @property
    def items(self) -> list[GroupItem]:
        return [GroupItem(m.slot_id, m.quantity) for m in self.members]


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True, slots=True)
class GroupOutcome:
    """The group as it is now, and whether this call changed it (False: a replay)."""

    group: Group
    changed: bool


class GroupNotFound(EngineError):
    def __init__(self, group_id: str) -> None:
        super().__init__("group not found")
        self.group_id = group_id


class GroupRefused(EngineError):
    """An item could not be held, so nothing was: ``cause`` says why (the first
    refused item, by index)."""

    def __init__(self, index: int, slot_id: int, cause: EngineError) -> None:
        super().__init__(f"item {index} (slot {slot_id}) refused: {cause}")
        self.index = index
        self.slot_id = slot_id
        self.cause = cause


class GroupExpired(EngineError):
    def __init__(self, group: Group) -> None:
        super().__init__(f"group {group.group_id} expired")
        self.group = group


class GroupCancelled(EngineError):
    def __init__(self, group: Group) -> None:
        super().__init__(f"group {group.group_id} was cancelled")
        self.group = group


class GroupIdempotencyMismatch(EngineError):
    """The key first made a group of other items."""

    def __init__(self, group: Group) -> None:
        super().__init__(f"key was first used for group {group.group_id} of other items")
        self.group = group


def new_group_id(home_slot: int) -> str:
    """``g<slot>-<hex>``: names its home slot (so its partition), never a hold id."""
    return f"g{home_slot}-{secrets.token_hex(8)}"


def slot_of_group(group_id: str) -> int | None:
    head, sep, token = group_id.partition("-")
    slot = head[1:]
    if (
        not head.startswith("g")
        or not sep
        or not slot.isascii()
        or not slot.isdigit()
        or len(slot) > 19
        or len(token) != 16
        or any(c not in "0123456789abcdef" for c in token)
        or not 0 < int(slot) <= 2**63 - 1
    ):
        return None
    return int(slot)
