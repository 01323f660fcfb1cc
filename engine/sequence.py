"""Each partition's event sequence, as Redis has it (lua/lib.lua: field 'seq' of
the slots hash), and failing a partition closed when it has gone back in time.

The PostgreSQL side (the highest sequence applied there) is sync/sequence.py.
"""

from __future__ import annotations

from typing import Any

from .keys import EPOCH_FIELD, KeySchema
from .replies import redis_errors

__all__ = ["SEQUENCE_FIELD", "fail_closed", "partition_sequences"]

SEQUENCE_FIELD = "seq"


async def partition_sequences(redis: Any, keys: KeySchema) -> dict[int, int]:
    """Sequence of every partition that is built (has its epoch marker).

    A partition being rebuilt (no marker) is left out: it refuses commands and
    gets its sequence when the rebuild commits.
    """
    async with redis_errors(), redis.pipeline(transaction=False) as pipe:
        for p in range(keys.partitions):
            pipe.hmget(keys.slots(p), [EPOCH_FIELD, SEQUENCE_FIELD])
        replies = await pipe.execute()
    return {p: int(seq or 0) for p, (epoch, seq) in enumerate(replies) if epoch is not None}


async def fail_closed(redis: Any, keys: KeySchema, partition: int) -> None:
    """Drop the partition's epoch marker: every script refuses it (state_unavailable)
    until the sync worker rebuilds it from PostgreSQL (sync/restore.py)."""
    async with redis_errors():
        await redis.hdel(keys.slots(partition), EPOCH_FIELD)
