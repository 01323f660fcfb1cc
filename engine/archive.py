"""Taking a finished slot and its holds out of Redis (lua/archive.lua).

The sync side (sync/archive.py) decides which slots are over and first makes
PostgreSQL hold everything about them; this module only runs the one script
call per slot that checks Redis agrees with what PostgreSQL listed and removes
the slot, its holds and their idempotency records at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from redis.commands.core import AsyncScript

from . import errors
from .keys import KeySchema
from .replies import redis_errors, text
from .scripts import clock_arg, housekeeping_args, script_source
from .settings import EngineSettings

__all__ = ["ArchiveResult", "Archiver", "StoredHold"]

ArchiveStatus = Literal["archived", "not_found", "busy", "behind"]


@dataclass(frozen=True, slots=True)
class StoredHold:
    """What the archive needs of a hold PostgreSQL has: its id and version (checked
    against Redis) and the user and key that name its idempotency record."""

    hold_id: str
    version: int
    user_id: str
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    status: ArchiveStatus
    removed: int = 0  # holds taken out of Redis
    reason: str = ""  # why a slot was left ('busy', 'behind')
    event: bytes | None = None  # the archive event appended ('archived')


class Archiver:
    def __init__(self, redis: Any, settings: EngineSettings) -> None:
        self._redis = redis
        self.keys = KeySchema(settings.key_prefix, settings.partitions)
        self._house = housekeeping_args(settings)
        self._script = AsyncScript(redis, script_source("archive").encode())

    async def archive(
        self,
        slot_id: int,
        confirmed: int,
        holds: Sequence[StoredHold],
        *,
        now_ms: int | None = None,
    ) -> ArchiveResult:
        """Remove the slot and ``holds`` from Redis if it agrees with them (PostgreSQL's
        confirmed quantity and each hold's version); else say why not."""
        partition = self.keys.partition_of(slot_id)
        idem = [
            self.keys.idempotency(slot_id, h.user_id, h.idempotency_key)
            for h in holds
            if h.idempotency_key
        ]
        pairs = orjson.dumps([[h.hold_id, h.version] for h in holds]).decode()
        args = [clock_arg(now_ms), *self._house, str(slot_id), str(confirmed), pairs]
        async with redis_errors():
            reply = await self._script(
                keys=[*self.keys.partition(partition), *idem], args=args, client=self._redis
            )
        tag = text(reply[0])
        if tag == "state_unavailable":
            raise errors.StateUnavailable(partition)
        if tag == "archived":
            event = reply[2] if isinstance(reply[2], bytes) else str(reply[2]).encode()
            return ArchiveResult("archived", removed=int(reply[1]), event=event)
        if tag == "not_found":
            return ArchiveResult("not_found")
        if tag == "busy":
            return ArchiveResult("busy", reason=text(reply[1]))
        if tag == "behind":
            return ArchiveResult("behind", reason=text(reply[1]))
        raise RuntimeError(f"unexpected archive reply {tag!r}")
