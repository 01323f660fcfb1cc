"""Store hold group records read from the durable record (a partition rebuild).

The partition is closed while it is rebuilt (no epoch marker), so no script reads
or changes a record meanwhile; the records are kept as lua/group_home.lua keeps
them: a held group until its expiry plus the retention, a cancelled one for the
retention after its cancel, a confirmed one for good (a booking stays). The
key that made a group is bound to it again while the idempotency memory lasts
(from the group's creation), so a retried request replays it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from .group_models import Group, slot_of_group
from .keys import KeySchema
from .replies import redis_errors
from .settings import EngineSettings

__all__ = ["load_groups"]


async def load_groups(
    redis: Any,
    keys: KeySchema,
    settings: EngineSettings,
    groups: Iterable[Group],
    *,
    now_ms: int | None = None,
) -> int:
    """Store each group still kept; returns how many were stored."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    retention_ms = settings.finished_retention_s * 1000
    idempotency_ms = settings.idempotency_ttl_s * 1000
    stored = 0
    async with redis_errors(), redis.pipeline(transaction=False) as pipe:
        for group in groups:
            slot = slot_of_group(group.group_id)
            if slot is None:
                raise ValueError(f"not a group id: {group.group_id!r}")
            partition = keys.partition_of(slot)
            key = keys.group(partition, group.group_id)
            if group.status == "confirmed":
                pipe.set(key, group.encode())
            else:
                ends = group.cancelled_at_ms if group.status == "cancelled" else None
                ttl = (ends or group.expires_at_ms) + retention_ms - now
                if ttl <= 0:
                    continue
                pipe.set(key, group.encode(), px=ttl)
            stored += 1
            remember = group.created_at_ms + idempotency_ms - now
            if group.idempotency_key and remember > 0:
                bound = keys.group_idempotency(partition, group.user_id, group.idempotency_key)
                pipe.set(bound, group.group_id, px=remember)
        await pipe.execute()
    return stored
