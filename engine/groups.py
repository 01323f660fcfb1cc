"""Hold groups: all or nothing across slots, partitions and Redis Cluster nodes.

No script touches two partitions. A group is made in three steps:

1. ``begin`` in the group's home partition (its first item's): binds the
   idempotency key to a new *pending* group record that names every member hold id
   and a make-by deadline (now + the pending lifetime);
2. one ``group_part`` per item, in the item's partition, at once: a normal held
   hold tied to the group (field ``g``) with the group's shared ``expires_at``;
   no part is made at or after the make-by deadline;
3. ``commit`` in the home partition: pending -> held, only before the deadline.

Any refusal releases the parts made and forgets the group (its key is unbound, so
a retry starts afresh). A process that dies half-way leaves a pending (or
failed) record in the home partition's due set: ``sweep`` (run by the sync
worker's expiry sweep) releases its parts once the deadline and a grace period
have passed. After ``commit`` every member exists and they share one expiry.

Confirm and cancel mark the record first (confirming / cancelling), then change
the members partition by partition, then finish the record; the sweep finishes
what a dead process left. The lua headers (lua/group_*.lua) give each step's rules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson

from . import errors
from .group_load import load_groups
from .group_models import (
    Group,
    GroupCancelled,
    GroupExpired,
    GroupIdempotencyMismatch,
    GroupItem,
    GroupNotFound,
    GroupOutcome,
    GroupRefused,
    Member,
    new_group_id,
    slot_of_group,
)
from .keys import KeySchema, check_user_id, new_hold_id
from .models import Hold
from .replies import redis_errors, refusal, text
from .scripts import Scripts, clock_arg, housekeeping_args
from .settings import EngineSettings

__all__ = ["Groups", "new_group_id", "slot_of_group"]


class Groups:
    """Made by the Engine (``engine.groups``); shares its client, keys and scripts."""

    def __init__(
        self, redis: Any, keys: KeySchema, scripts: Scripts, settings: EngineSettings
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._settings = settings
        self._part = scripts.named("group_part")
        self._members = scripts.named("group_members")
        self._home = scripts.named("group_home")
        self._pending_ms = settings.group_pending_ms
        self._house = housekeeping_args(settings)

    # -- keys -------------------------------------------------------------------

    def _home_keys(self, group_id: str, user_id: str = "", key: str = "") -> list[str]:
        slot = slot_of_group(group_id)
        if slot is None:
            raise GroupNotFound(group_id)
        partition = self._keys.partition_of(slot)
        return [
            *self._keys.partition(partition),
            self._keys.group(partition, group_id),
            self._keys.group_idempotency(partition, user_id, key),
            self._keys.groups_due(partition),
        ]

    async def _call_home(
        self, group_id: str, op: str, *args: str, now_ms: int | None, user: str = "", key: str = ""
    ) -> Any:
        keys = self._home_keys(group_id, user, key)
        argv = [clock_arg(now_ms), *self._house, op, group_id, *args]
        async with redis_errors():
            reply = await self._home(keys=keys, args=argv, client=self._redis)
        if text(reply[0]) == "state_unavailable":
            slot = slot_of_group(group_id) or 0
            raise errors.StateUnavailable(self._keys.partition_of(slot))
        return reply

    # -- making -----------------------------------------------------------------

    async def hold(
        self,
        user_id: str,
        idempotency_key: str,
        items: Sequence[GroupItem],
        *,
        now_ms: int | None = None,
    ) -> GroupOutcome:
        """Hold every item or none; a repeated key answers the group it made."""
        self._check(user_id, idempotency_key, items)
        for _ in range(3):  # a concurrent copy of this request may fail and unbind the key
            group_id = new_group_id(items[0].slot_id)
            members = [[new_hold_id(i.slot_id), str(i.slot_id), i.quantity] for i in items]
            reply = await self._call_home(
                group_id,
                "begin",
                user_id,
                orjson.dumps(members).decode(),
                str(self._settings.hold_ttl_s * 1000),
                str(self._pending_ms),
                str(self._settings.idempotency_ttl_s * 1000),
                idempotency_key,
                str(self._pending_ms),
                now_ms=now_ms,
                user=user_id,
                key=idempotency_key,
            )
            if text(reply[0]) == "begun":
                group = Group.decode(reply[1])
                return GroupOutcome(await self._make(group, user_id, now_ms), changed=True)
            replayed = await self._replay(text(reply[1]), user_id, idempotency_key, items, now_ms)
            if replayed is not None:
                return replayed
        raise errors.BackendUnavailable("the group's idempotency key is contended")

    def _check(self, user_id: str, key: str, items: Sequence[GroupItem]) -> None:
        check_user_id(user_id)
        if not key:
            raise ValueError("idempotency_key must not be empty")
        if not 1 <= len(items) <= self._settings.max_group_items:
            raise ValueError(f"a group has 1 to {self._settings.max_group_items} items")
        if len({i.slot_id for i in items}) != len(items):
            raise ValueError("a group names each slot at most once")
        for item in items:
            if not 0 < item.slot_id <= 2**63 - 1:
                raise ValueError(f"slot_id must be 1..{2**63 - 1}")
            if not 1 <= item.quantity <= self._settings.max_quantity:
                raise ValueError(f"quantity must be 1..{self._settings.max_quantity}")

    async def _make(self, group: Group, user_id: str, now_ms: int | None) -> Group:
        deadline = str(group.created_at_ms + self._pending_ms)
        parts = [self._make_part(group, m, user_id, deadline, now_ms) for m in group.members]
        results = await asyncio.gather(*parts, return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        refused = [
            (n, r)
            for n, r in enumerate(results)
            if isinstance(r, errors.EngineError)
            and not isinstance(r, errors.StateUnavailable | errors.BackendUnavailable | _Late)
        ]
        if failure is None:
            reply = await self._call_home(group.group_id, "commit", now_ms=now_ms)
            if text(reply[0]) == "held":
                holds = tuple(r for r in results if isinstance(r, Hold))
                return _with_holds(Group.decode(reply[1]), holds)
            failure = _Late()
        await self._undo(group, now_ms)
        if refused:
            index, cause = refused[0]
            raise GroupRefused(index, group.members[index].slot_id, cause)
        if isinstance(failure, _Late):
            raise errors.BackendUnavailable("the group's parts took too long to make")
        raise failure

    async def _make_part(
        self, group: Group, member: Member, user_id: str, deadline: str, now_ms: int | None
    ) -> Hold:
        partition = self._keys.partition_of(member.slot_id)
        args = [
            clock_arg(now_ms),
            *self._house,
            str(member.slot_id),
            user_id,
            str(member.quantity),
            member.hold_id,
            group.group_id,
            str(group.expires_at_ms),
            deadline,
            str(self._settings.max_held_per_user_slot),
        ]
        async with redis_errors():
            reply = await self._part(
                keys=self._keys.partition(partition), args=args, client=self._redis
            )
        tag = text(reply[0])
        if tag == "made":
            return Hold.from_stored(reply[1])
        if tag == "late":
            raise _Late()
        raise refusal(
            tag,
            reply,
            partition=partition,
            slot_id=member.slot_id,
            held_limit=self._settings.max_held_per_user_slot,
        )

    async def _undo(self, group: Group, now_ms: int | None, *, sweep: bool = False) -> bool:
        """Fail a pending group, release its parts, forget it. False: it was not pending."""
        reply = await self._call_home(
            group.group_id,
            "abort",
            "sweep" if sweep else "",
            now_ms=now_ms,
            user=group.user_id,
            key=group.idempotency_key,
        )
        if text(reply[0]) != "aborted":
            return False
        await self._change_members(group, "release", now_ms)
        await self._call_home(group.group_id, "forget", now_ms=now_ms)
        return True

    async def _replay(
        self, group_id: str, user_id: str, key: str, items: Sequence[GroupItem], now_ms: int | None
    ) -> GroupOutcome | None:
        """The group a key made; waits while a concurrent copy is still making it.
        None: that copy failed (the key is free again). A group Redis no longer keeps
        while its key is still bound (retention below the key's memory): 404."""
        waited = 0.0
        while True:
            try:
                group = await self.get(group_id, user_id, now_ms=now_ms)
            except GroupNotFound:
                raw = await self._read_raw(group_id)
                if raw is None:
                    async with redis_errors():
                        bound = await self._redis.get(self._home_keys(group_id, user_id, key)[8])
                    if bound is not None and text(bound) == group_id:
                        raise
                    return None
                if orjson.loads(raw)["st"] != "pending":
                    return None
                if waited > 2 * self._pending_ms / 1000:
                    raise errors.BackendUnavailable("a copy of this request is still on") from None
                await asyncio.sleep(0.02)
                waited += 0.02
                continue
            if list(group.items) != list(items):
                raise GroupIdempotencyMismatch(group)
            return GroupOutcome(group, changed=False)

    async def _read_raw(self, group_id: str) -> bytes | None:
        async with redis_errors():
            slot = slot_of_group(group_id) or 0
            key = self._keys.group(self._keys.partition_of(slot), group_id)
            raw: bytes | None = await self._redis.get(key)
        return raw

    async def load(self, groups: Sequence[Group], *, now_ms: int | None = None) -> int:
        """Store records from the durable record while their partition is rebuilt."""
        return await load_groups(self._redis, self._keys, self._settings, groups, now_ms=now_ms)

    # -- reading and changing -----------------------------------------------------

    async def get(self, group_id: str, user_id: str | None, *, now_ms: int | None = None) -> Group:
        """The group with its members; ``user_id=None`` skips the ownership check."""
        reply = await self._call_home(group_id, "read", now_ms=now_ms)
        if text(reply[0]) == "not_found":
            raise GroupNotFound(group_id)
        group = Group.decode(reply[1], text(reply[0]))
        if user_id is not None and group.user_id != user_id:
            raise GroupNotFound(group_id)
        holds = await self._read_members(group)
        return _with_holds(group, holds)

    async def _read_members(self, group: Group) -> tuple[Hold, ...]:
        async with redis_errors(), self._redis.pipeline(transaction=False) as pipe:
            for m in group.members:
                pipe.hget(self._keys.holds(self._keys.partition_of(m.slot_id)), m.hold_id)
            raws = await pipe.execute()
        return tuple(
            Hold.from_stored(raw, m.hold_id)
            for m, raw in zip(group.members, raws, strict=True)
            if raw is not None
        )

    async def confirm(
        self, group_id: str, user_id: str | None, *, now_ms: int | None = None
    ) -> GroupOutcome:
        """Confirm every member, or none (the group answers expired or cancelled)."""
        group = await self.get(group_id, user_id, now_ms=now_ms)
        margin = str(2 * self._pending_ms)
        reply = await self._call_home(
            group_id, "confirm", margin, str(self._pending_ms), now_ms=now_ms
        )
        tag = text(reply[0])
        if tag == "confirmed":
            return GroupOutcome(group, changed=False)
        if tag == "expired":
            raise GroupExpired(group)
        if tag != "confirming":
            raise GroupCancelled(group)
        done = await self._finish(group, "confirm", "confirmed", now_ms)
        if done.status != "confirmed":
            raise GroupCancelled(done)  # cancelled while it was being confirmed
        return GroupOutcome(done, changed=True)

    async def cancel(
        self, group_id: str, user_id: str | None, *, now_ms: int | None = None
    ) -> GroupOutcome:
        """Cancel every member and give their capacity back; idempotent."""
        group = await self.get(group_id, user_id, now_ms=now_ms)
        reply = await self._call_home(group_id, "cancel", str(self._pending_ms), now_ms=now_ms)
        if text(reply[0]) != "cancelling":
            return GroupOutcome(group, changed=False)  # cancelled or expired already
        return GroupOutcome(await self._finish(group, "cancel", "cancelled", now_ms), True)

    async def _finish(self, group: Group, op: str, target: str, now_ms: int | None) -> Group:
        holds = await self._change_members(group, op, now_ms)
        reply = await self._call_home(group.group_id, "finish", target, now_ms=now_ms)
        return _with_holds(Group.decode(reply[1], text(reply[0])), holds)

    async def _change_members(self, group: Group, op: str, now_ms: int | None) -> tuple[Hold, ...]:
        """One group_members call per partition, all at once; the members as they are."""
        by_partition: dict[int, list[Member]] = {}
        for m in group.members:
            by_partition.setdefault(self._keys.partition_of(m.slot_id), []).append(m)

        async def run(partition: int, members: list[Member]) -> list[Any]:
            args = [clock_arg(now_ms), *self._house, op, group.group_id]
            async with redis_errors():
                reply = await self._members(
                    keys=self._keys.partition(partition),
                    args=[*args, *(m.hold_id for m in members)],
                    client=self._redis,
                )
            if text(reply[0]) == "state_unavailable":
                raise errors.StateUnavailable(partition)
            return list(reply[1:])

        replies = await asyncio.gather(*(run(p, ms) for p, ms in by_partition.items()))
        found: dict[str, Hold] = {}
        for members, raws in zip(by_partition.values(), replies, strict=True):
            for m, raw in zip(members, raws, strict=True):
                if raw:
                    found[m.hold_id] = Hold.from_stored(raw)
        return tuple(found[m.hold_id] for m in group.members if m.hold_id in found)

    # -- the sweep ----------------------------------------------------------------

    async def sweep(self, partition: int, *, now_ms: int | None = None) -> int:
        """Finish or undo the groups of one home partition that a process left
        half-way (pending past their deadline, confirming, cancelling). Returns
        how many it handled."""
        due_key = self._keys.groups_due(partition)
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        async with redis_errors():
            due = await self._redis.zrangebyscore(
                due_key, "-inf", now, start=0, num=self._settings.housekeeping_batch
            )
        for raw_id in due:
            group_id = text(raw_id)
            raw = await self._read_raw(group_id)
            if raw is None:
                await self._call_home(group_id, "forget", now_ms=now_ms)
                continue
            group = Group.decode(raw)
            match orjson.loads(raw)["st"]:
                case "pending":
                    await self._undo(group, now_ms, sweep=True)
                case "failed":
                    await self._change_members(group, "release", now_ms)
                    await self._call_home(group_id, "forget", now_ms=now_ms)
                case "confirming":
                    await self._finish(group, "confirm", "confirmed", now_ms)
                case "cancelling":
                    await self._finish(group, "cancel", "cancelled", now_ms)
                case _:
                    await self._call_home(group_id, "forget", now_ms=now_ms)
        return len(due)


class _Late(errors.EngineError):
    """A part came after the group's make-by deadline."""


def _with_holds(group: Group, holds: tuple[Hold, ...]) -> Group:
    return replace(group, holds=holds)
