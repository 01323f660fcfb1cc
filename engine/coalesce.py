"""Coalesce the script calls made in one event-loop turn into one pipelined write.

Under load an API process has many requests in flight; each would otherwise
take a connection from the pool, write one EVALSHA, wait, and give the
connection back. Here every call made before the loop gets back to its I/O
joins one pipeline: one connection checkout, one socket write, replies read
back to back. Each script still runs atomically on its own; a pipeline is not
a transaction and needs none.

On a single server (or a Sentinel's primary) the batch skips redis-py's
pipeline object: the FCALLs (or EVALSHAs) are packed into RESP here (``pack_command``; a
few bytes joins instead of redis-py's general encoder, which was a tenth of the
API's CPU per hold) and written on a pooled connection directly. A cluster
client keeps the pipeline, which routes each call to its node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from .scripts import Operation, missing_function

__all__ = ["Coalescer", "pack_command", "pack_evalsha"]

_MAX_BATCH = 256

_Call = tuple[Operation, list[str], list[Any], "asyncio.Future[Any]"]


def _arg(value: Any) -> bytes:
    """One argument as redis-py's Encoder would send it (strings as UTF-8)."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value).encode()
    raise TypeError(f"cannot send {type(value).__name__} to Redis: {value!r}")


def pack_command(verb: str, target: str, keys: Sequence[Any], args: Sequence[Any]) -> bytes:
    """``<verb> <target> len(keys) *keys *args`` in RESP, as one bytes object:
    ``EVALSHA sha ...`` or ``FCALL function ...`` (engine/scripts.py says which)."""
    items = (*keys, *args)
    numkeys = str(len(keys))
    head = f"*{len(items) + 3}\r\n${len(verb)}\r\n{verb}\r\n${len(target)}\r\n{target}\r\n"
    head += f"${len(numkeys)}\r\n{numkeys}\r\n"
    # The usual call: ASCII strings, whose length in characters is their length in bytes.
    if all(type(v) is str for v in items):
        text = head + "".join([f"${len(v)}\r\n{v}\r\n" for v in items])
        if text.isascii():
            return text.encode()
    return head.encode() + b"".join([b"$%d\r\n%s\r\n" % (len(b), b) for b in map(_arg, items)])


def pack_evalsha(sha: str, keys: Sequence[Any], args: Sequence[Any]) -> bytes:
    """``EVALSHA sha len(keys) *keys *args`` in RESP."""
    return pack_command("EVALSHA", sha, keys, args)


class Coalescer:
    def __init__(self, client: Any) -> None:
        self._client = client
        # A pipeline per batch only where it must route calls (a cluster).
        self._direct = isinstance(client, aioredis.Redis)
        self._pending: list[_Call] = []
        self._scheduled = False
        # The loop keeps only weak references to tasks; these keep ours alive.
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def call(self, script: Operation, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((script, keys, args, future))
        if len(self._pending) == 1 and not self._scheduled:
            self._scheduled = True
            # call_soon runs after the callbacks already queued for this turn,
            # so every request woken together gets to add its call first.
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending:
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            self._spawn(self._send(batch))

    async def _send(self, batch: list[_Call]) -> None:
        try:
            await batch[0][0].prepare(self._client)  # FCALL or EVALSHA: known after the first
            if self._direct:
                replies = await self._exchange(batch)
            else:
                async with self._client.pipeline(transaction=False) as pipe:
                    for script, keys, args, _ in batch:
                        pipe.execute_command(*script.command(keys, args))
                    replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # the connection failed: every caller learns it
            for _, _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (script, keys, args, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, NoScriptError) or missing_function(reply):
                # Redis restarted and forgot the scripts (or the library): this
                # call goes alone, through the reload-and-retry of engine/scripts.py.
                self._spawn(self._retry_alone(script, keys, args, future))
            elif isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _exchange(self, batch: list[_Call]) -> list[Any]:
        """Write the batch on one pooled connection, read its replies in order.

        An error reply stays with its call; anything else (the connection failed,
        a timeout, a cancel) leaves replies unread, so the connection is dropped
        rather than given back to the pool, as redis-py's pipeline does.
        """
        pool = self._client.connection_pool
        packed = b"".join(
            [pack_command(*s.verb_target(), keys, args) for s, keys, args, _ in batch]
        )
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(packed)
            replies: list[Any] = []
            for _ in batch:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            return replies
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        finally:
            await pool.release(conn)

    async def _retry_alone(
        self, script: Operation, keys: list[str], args: list[Any], future: asyncio.Future[Any]
    ) -> None:
        try:
            result = await script(keys=keys, args=args, client=self._client)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        if not future.done():
            future.set_result(result)
