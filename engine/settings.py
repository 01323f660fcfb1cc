"""The engine's knobs. Built once by the caller (from the environment, in api/)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EngineSettings"]


@dataclass(frozen=True, slots=True)
class EngineSettings:
    # slot -> partition is slot_id mod partitions: changing it moves every slot,
    # so it is fixed for the life of a deployment's data.
    partitions: int = 16
    # Prepended to every key, so several deployments (and tests) share one Redis.
    key_prefix: str = "sk:"
    hold_ttl_s: int = 300
    idempotency_ttl_s: int = 86_400
    max_quantity: int = 100
    max_held_per_user_slot: int = 10
    # Due holds expired (and finished holds forgotten) by each command, at most.
    housekeeping_batch: int = 16
    # Cancelled and expired holds stay readable in Redis this long; their history
    # lives in PostgreSQL. Bounds Redis memory by live holds, not all holds ever.
    finished_retention_s: int = 86_400
    # Waitlist: an entry lapses after waitlist_ttl_s; an offer is a hold that
    # lives waitlist_offer_ttl_s; one user waits at most this often per slot.
    waitlist_ttl_s: int = 86_400
    waitlist_offer_ttl_s: int = 300
    max_waiting_per_user_slot: int = 1
    # Hold groups (engine/groups.py): most items in one group, and how long a group
    # may take to make its parts; parts of a group not held by then are released.
    max_group_items: int = 10
    group_pending_ms: int = 10_000
    # A hold may be extended this often, and never live past created_at + this.
    hold_max_extensions: int = 2
    hold_max_lifetime_s: int = 900
    # Send the hold/confirm/cancel calls of one event-loop turn as one pipeline.
    coalesce: bool = True
    # When > 0, each hold/confirm/cancel is followed by WAIT on its connection
    # (engine/replicated.py): answered only once this many replicas have it.
    min_replicas: int = 0
    wait_timeout_ms: int = 1000

    def __post_init__(self) -> None:
        positive = {
            "partitions": self.partitions,
            "hold_ttl_s": self.hold_ttl_s,
            "idempotency_ttl_s": self.idempotency_ttl_s,
            "max_quantity": self.max_quantity,
            "max_held_per_user_slot": self.max_held_per_user_slot,
            "housekeeping_batch": self.housekeeping_batch,
            "finished_retention_s": self.finished_retention_s,
            "waitlist_ttl_s": self.waitlist_ttl_s,
            "waitlist_offer_ttl_s": self.waitlist_offer_ttl_s,
            "max_waiting_per_user_slot": self.max_waiting_per_user_slot,
            "max_group_items": self.max_group_items,
            "group_pending_ms": self.group_pending_ms,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.min_replicas < 0 or self.wait_timeout_ms < 1:
            raise ValueError("min_replicas must be >= 0 and wait_timeout_ms >= 1")
        if self.hold_max_extensions < 0:
            raise ValueError(f"hold_max_extensions must be >= 0, got {self.hold_max_extensions}")
        if self.hold_max_lifetime_s < 1:
            raise ValueError(f"hold_max_lifetime_s must be >= 1, got {self.hold_max_lifetime_s}")
        if any(c in self.key_prefix for c in "{}"):
            # A brace in the prefix would become the cluster hash tag.
            raise ValueError(f"key_prefix must not contain braces: {self.key_prefix!r}")
