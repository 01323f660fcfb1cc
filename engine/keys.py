"""The Redis key schema: the only place that spells a key name.

Every key of a partition carries the hash tag ``{p<N>}`` so one script call
touches one Redis Cluster hash slot.
"""

from __future__ import annotations

import secrets

__all__ = [
    "EPOCH_FIELD",
    "MAX_SLOT_ID",
    "KeySchema",
    "check_slot_id",
    "check_user_id",
    "new_hold_id",
    "slot_of_hold",
]

MAX_SLOT_ID = 2**63 - 1  # a PostgreSQL bigint
# The epoch marker: a field of each partition's slots hash (lua/lib.lua), set when
# the partition is built. A partition without it has lost its state.
EPOCH_FIELD = "epoch"
_MAX_SLOT_DIGITS = 19


class KeySchema:
    def __init__(self, prefix: str, partitions: int = 1) -> None:
        self.prefix = prefix
        self.partitions = partitions
        self._partition_keys = [self._build(p) for p in range(partitions)]

    def _build(self, partition: int) -> list[str]:
        tag = f"{self.prefix}{{p{partition}}}:"
        # Order is the contract of lua/lib.lua (KEYS[1..11]).
        return [
            tag + "slots",
            tag + "holds",
            tag + "expiry",
            tag + "user_held",
            tag + "finished",
            tag + "events",
            tag + "waitlist",
            tag + "wait_order",
            tag + "waiting",
            tag + "wait_lapse",
            tag + "wait_more",
        ]

    def partition_of(self, slot_id: int) -> int:
        return slot_id % self.partitions

    def partition(self, partition: int) -> list[str]:
        """The eleven keys every script gets first, for one partition."""
        return self._partition_keys[partition]

    def slots(self, partition: int) -> str:
        """The slots hash, which also holds the epoch marker (EPOCH_FIELD)."""
        return self._partition_keys[partition][0]

    def holds(self, partition: int) -> str:
        return self._partition_keys[partition][1]

    def events(self, partition: int) -> str:
        return self._partition_keys[partition][5]

    def waitlist(self, partition: int) -> str:
        return self._partition_keys[partition][6]

    def wait_order(self, partition: int) -> str:
        return self._partition_keys[partition][7]

    def waiting(self, partition: int) -> str:
        return self._partition_keys[partition][8]

    def wait_idempotency(self, slot_id: int, user_id: str, key: str) -> str:
        partition = self.partition_of(slot_id)
        return f"{self.prefix}{{p{partition}}}:widem:{slot_id}:{user_id}:{key}"

    def idempotency(self, slot_id: int, user_id: str, key: str) -> str:
        partition = self.partition_of(slot_id)
        return f"{self.prefix}{{p{partition}}}:idem:{slot_id}:{user_id}:{key}"

    # Hold groups (engine/groups.py) live in their home partition.
    def group(self, partition: int, group_id: str) -> str:
        return f"{self.prefix}{{p{partition}}}:group:{group_id}"

    def group_idempotency(self, partition: int, user_id: str, key: str) -> str:
        return f"{self.prefix}{{p{partition}}}:gidem:{user_id}:{key}"

    def groups_due(self, partition: int) -> str:
        return f"{self.prefix}{{p{partition}}}:groups_due"

    # -- keys outside the partitions (no hash tag: one key each) ------------------

    def lock(self, duty: str) -> str:
        """A lock that lets one process at a time run ``duty`` (sweep, restore:3...)."""
        return f"{self.prefix}lock:{duty}"

    def counter(self, name: str) -> str:
        """A number the sync side writes and /metrics reads (sync:expired_total...)."""
        return f"{self.prefix}sync:{name}"

    def rate_limit(self, name: str, window: int, subject: str) -> str:
        return f"{self.prefix}rl:{name}:{window}:{subject}"

    def revoked(self) -> str:
        """One sorted set of revoked token ids, scored by expiry (epoch seconds)."""
        return f"{self.prefix}auth:revoked"

    def revocations_channel(self) -> str:
        return f"{self.prefix}auth:revocations"

    def arq_queue(self) -> str:
        return f"{self.prefix}arq:queue"

    def cron_job(self, name: str) -> str:
        """Cron job ids are global in arq; the prefix keeps deployments apart."""
        return f"{self.prefix}{name}"


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


def check_slot_id(slot_id: int) -> None:
    if not 0 < slot_id <= MAX_SLOT_ID:
        raise ValueError(f"slot_id must be 1..{MAX_SLOT_ID}, got {slot_id}")


def check_user_id(user_id: str) -> None:
    # ':' separates the parts of idempotency keys and per-user counters.
    if not user_id or ":" in user_id:
        raise ValueError(f"user_id must be non-empty and free of ':', got {user_id!r}")
