"""A confirmation is durable when it is answered: the API writes a confirm (and
the cancel of a confirmed hold) through to PostgreSQL before answering.

The write is the drain's own (sync/events.py): the hold upserted only if its
version is newer, the event kept in hold_events under its stream entry id, the
partition's sequence recorded; so the worker's later copy of the same event
changes nothing. PostgreSQL arbitrates: the trigger that keeps slots.confirmed
(migrations/0005) refuses a confirm that would take it past the slot's
capacity, whatever Redis says, and the transaction is rolled back.

A retried confirm that Redis already has ("unchanged") is written through
again: its first write-through may have failed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Literal

import asyncpg

from engine import Engine, GroupOutcome, Hold, HoldNotFound, Outcome
from engine.sequence import fail_closed

from .archived import archived_group_refusal, archived_hold_refusal
from .events import Entry, apply_entries, lock_partitions
from .records import upsert_holds
from .sequence import note_sequences, sequence_marks

__all__ = [
    "ConfirmRefused",
    "DurableUnavailable",
    "change_durably",
    "change_group_durably",
    "write_through",
]

log = logging.getLogger("slotkeeper.sync")

_ARBITER = "slots_confirmed_within_capacity"
_UNREACHABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.OperatorInterventionError,  # shutting down, cannot connect now
    asyncpg.TooManyConnectionsError,
    # A pooled connection an outage cut mid-operation ("another operation is in
    # progress"): the pool drops it; the client's retry gets a fresh one.
    asyncpg.InternalClientError,
    OSError,  # includes TimeoutError
)


class ConfirmRefused(Exception):
    """PostgreSQL refused the confirm: the slot's confirmed quantity would pass
    its capacity there."""

    def __init__(self, hold_id: str, slot_id: int) -> None:
        super().__init__(f"slot {slot_id} has no capacity left for hold {hold_id}")
        self.hold_id = hold_id
        self.slot_id = slot_id


class DurableUnavailable(Exception):
    """PostgreSQL could not be reached: the change is in Redis, not yet durable."""


async def write_through(engine: Engine, redis: Any, pool: Any, outcome: Outcome) -> None:
    """Commit the hold's current state in PostgreSQL, or raise.

    Raises ConfirmRefused (nothing written) or DurableUnavailable. A write that
    shows Redis went back in time (sync/sequence.py) still commits, then fails
    the partition closed so it is rebuilt from PostgreSQL.
    """
    hold = outcome.hold
    partition = engine.keys.partition_of(hold.slot_id)
    stream = engine.keys.events(partition)
    rewound = False
    try:
        async with pool.acquire() as conn, conn.transaction():
            await lock_partitions(conn, [stream])
            if outcome.event is not None and outcome.entry_id is not None:
                await apply_entries(conn, [Entry(stream, outcome.entry_id, "h", outcome.event)])
                marks = sequence_marks([(outcome.entry_id, outcome.event)])
                rewound = await note_sequences(conn, stream, marks)
            else:
                await upsert_holds(conn, [hold], newer_only=True)
    except asyncpg.CheckViolationError as exc:
        if exc.constraint_name != _ARBITER:
            raise
        raise ConfirmRefused(hold.hold_id, hold.slot_id) from exc
    except _UNREACHABLE as exc:
        raise DurableUnavailable(f"{type(exc).__name__}: {exc}") from exc
    if rewound:
        await fail_closed(redis, engine.keys, partition)


async def change_durably(
    engine: Engine,
    redis: Any,
    pool: Any,
    command: Literal["confirm", "cancel"],
    hold_id: str,
    user_id: str | None,
    *,
    quantity: int | None = None,
) -> Outcome:
    """Confirm (all, or ``quantity`` of it: the rest goes back to the slot) or
    cancel a hold; a confirm, and the cancel of a confirmed hold,
    return only once PostgreSQL has committed them (a retry completes one whose
    write-through failed).

    Raises DurableUnavailable (the change is kept in Redis), or ConfirmRefused
    after putting Redis right: the hold is released there, and the durable
    record learns it now if it can, else from the worker.
    """
    try:
        if command == "confirm":
            outcome = await engine.confirm(hold_id, user_id, quantity=quantity)
        else:
            outcome = await engine.cancel(hold_id, user_id)
    except HoldNotFound:
        # A hold of an archived slot (sync/archive.py) is read-only: 409, not 404.
        refused = await archived_hold_refusal(pool, hold_id, user_id)
        if refused is None:
            raise
        raise refused from None
    if command == "cancel" and outcome.hold.confirmed_at_ms is None:
        return outcome  # a hold, not a booking: Redis-first like holds
    try:
        await write_through(engine, redis, pool, outcome)
    except ConfirmRefused:
        cancelled = await engine.cancel(hold_id, None)
        with contextlib.suppress(ConfirmRefused, DurableUnavailable):
            await write_through(engine, redis, pool, cancelled)
        raise
    return outcome


async def _write_holds(engine: Engine, pool: Any, holds: Sequence[Hold]) -> None:
    """The holds' current state in one transaction: all of them, or none."""
    streams = [engine.keys.events(engine.keys.partition_of(h.slot_id)) for h in holds]
    try:
        async with pool.acquire() as conn, conn.transaction():
            await lock_partitions(conn, streams)
            await upsert_holds(conn, holds, newer_only=True)
    except asyncpg.CheckViolationError as exc:
        if exc.constraint_name != _ARBITER:
            raise
        first = holds[0]
        raise ConfirmRefused(first.hold_id, first.slot_id) from exc
    except _UNREACHABLE as exc:
        raise DurableUnavailable(f"{type(exc).__name__}: {exc}") from exc


async def change_group_durably(
    engine: Engine,
    pool: Any,
    command: Literal["confirm", "cancel"],
    group_id: str,
    user_id: str | None,
) -> GroupOutcome:
    """Confirm or cancel a hold group; a confirm, and the cancel of a confirmed
    group, return only once PostgreSQL has every member (one transaction, so all
    members or none; the drain adds their audit rows and feed events later).

    Raises DurableUnavailable (kept in Redis; a retry completes it), or
    ConfirmRefused after cancelling the group in Redis, as change_durably does.
    """
    groups = engine.groups
    if command == "cancel":
        # A group with a member on an archived slot is over: read-only (409).
        refused = await archived_group_refusal(pool, group_id, user_id)
        if refused is not None:
            raise refused
    change = groups.confirm if command == "confirm" else groups.cancel
    outcome = await change(group_id, user_id)
    holds = outcome.group.holds
    if command == "cancel" and all(h.confirmed_at_ms is None for h in holds):
        return outcome  # held, not booked: Redis-first like holds
    try:
        await _write_holds(engine, pool, holds)
    except ConfirmRefused:
        cancelled = await groups.cancel(group_id, None)
        with contextlib.suppress(ConfirmRefused, DurableUnavailable):
            await _write_holds(engine, pool, cancelled.group.holds)
        raise
    return outcome
