"""A script call followed by WAIT on the same connection (SLOTKEEPER_REDIS_MIN_REPLICAS).

WAIT counts the replicas that have every write the *calling connection* made,
so the script and the WAIT go in one pipeline, on one connection. A call that
wrote nothing (a replayed hold, a second confirm) waits for that connection's
earlier writes only: by the time a client retries, the first call's write has
normally reached the replicas, but that is not checked.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError

from . import errors
from .scripts import missing_function
from .settings import EngineSettings

__all__ = ["run_replicated"]


async def run_replicated(
    redis: Any, script: Any, keys: list[str], args: list[Any], settings: EngineSettings
) -> Any:
    """The script's reply, once ``settings.min_replicas`` replicas have its writes.

    Raises NotReplicated when WAIT times out first: the change is kept on the
    primary (a retry with the same key or hold id answers it).
    """
    await script.prepare(redis)
    try:
        reply, acknowledged = await _call_and_wait(redis, script, keys, args, settings)
    except ResponseError as exc:
        if not missing_function(exc):
            raise
        await script.prepare(redis, reload=True)  # the server lost the library
        reply, acknowledged = await _call_and_wait(redis, script, keys, args, settings)
    if int(acknowledged) < settings.min_replicas:
        raise errors.NotReplicated(settings.min_replicas, int(acknowledged))
    return reply


async def _call_and_wait(
    redis: Any, script: Any, keys: list[str], args: list[Any], settings: EngineSettings
) -> list[Any]:
    async with redis.pipeline(transaction=False) as pipe:
        await script(keys=keys, args=args, client=pipe)
        pipe.execute_command("WAIT", settings.min_replicas, settings.wait_timeout_ms)
        replies: list[Any] = await pipe.execute()
    return replies
