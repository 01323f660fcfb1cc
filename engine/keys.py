"""The Redis key schema: the only place that spells a key name.

Every key of a partition carries the hash tag ``{p<N>}`` so one script call
touches one Redis Cluster hash slot.
"""

from __future__ import annotations

import secrets

__all__ = ["MAX_SLOT_ID", "KeySchema", "new_hold_id", "slot_of_hold"]

MAX_SLOT_ID = 2**63 - 1  # a PostgreSQL bigint
_MAX_SLOT_DIGITS = 19


class KeySchema:
    def __init__(self, prefix: str, partitions: int) -> None:
        self.prefix = prefix
        self.partitions = partitions
        self._partition_keys = [self._build(p) for p in range(partitions)]

    def _build(self, partition: int) -> list[str]:
        tag = f"{self.prefix}{{p{partition}}}:"
        # Order is the contract of lua/lib.lua (KEYS[1..7]).
        return [
            tag + "epoch",
            tag + "slots",
            tag + "holds",
            tag + "expiry",
            tag + "user_held",
            tag + "finished",
            tag + "events",
        ]

    def partition_of(self, slot_id: int) -> int:
        return slot_id % self.partitions

    def partition(self, partition: int) -> list[str]:
        """The seven keys every script gets first, for one partition."""
        return self._partition_keys[partition]

    def epoch(self, partition: int) -> str:
        return self._partition_keys[partition][0]

    def slots(self, partition: int) -> str:
        return self._partition_keys[partition][1]

    def holds(self, partition: int) -> str:
        return self._partition_keys[partition][2]

    def events(self, partition: int) -> str:
        return self._partition_keys[partition][6]

    def idempotency(self, slot_id: int, user_id: str, key: str) -> str:
        partition = self.partition_of(slot_id)
        return f"{self.prefix}{{p{partition}}}:idem:{slot_id}:{user_id}:{key}"


def new_hold_id(slot_id: int) -> str:
    """An unguessable hold id that names its slot, so any node can route it."""
    return f"{slot_id}-{secrets.token_hex(8)}"


def slot_of_hold(hold_id: str) -> int | None:
    """The slot a hold id names, or None when the id is not one of ours."""
    slot, sep, token = hold_id.partition("-")
    if (
        not sep
        or not slot.isdigit()
        or not slot.isascii()
        or len(slot) > _MAX_SLOT_DIGITS
        or len(token) != 16
        or any(c not in "0123456789abcdef" for c in token)
        or not 0 < int(slot) <= MAX_SLOT_ID
    ):
        return None
    return int(slot)
