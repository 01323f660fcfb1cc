"""Store hold group records read from the durable record (a partition rebuild).

The partition is closed while it is rebuilt (no epoch marker), so no script reads
or changes a record meanwhile; the records are kept as lua/group_home.lua keeps
them: a held group until its expiry plus the retention, a cancelled one for the
retention after its cancel, a confirmed one for good (a booking stays).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from .group_models import Group, slot_of_group
from .keys import KeySchema
from .replies import redis_errors

__all__ = ["load_groups"]


async def load_groups(
    redis: Any,
    keys: KeySchema,
    groups: Iterable[Group],
    *,
    retention_ms: int,
    now_ms: int | None = None,
) -> int:
    """Store each group still kept; returns how many were stored."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    stored = 0
    async with redis_errors(), redis.pipeline(transaction=False) as pipe:
        for group in groups:
            slot = slot_of_group(group.group_id)
            if slot is None:
                raise ValueError(f"not a group id: {group.group_id!r}")
            key = keys.group(keys.partition_of(slot), group.group_id)
            if group.status == "confirmed":
                pipe.set(key, group.encode())
            else:
                ends = group.cancelled_at_ms if group.status == "cancelled" else None
                ttl = (ends or group.expires_at_ms) + retention_ms - now
                if ttl <= 0:
                    continue
                pipe.set(key, group.encode(), px=ttl)
            stored += 1
        await pipe.execute()
    return stored
