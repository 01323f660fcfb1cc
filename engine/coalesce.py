"""Coalesce the script calls made in one event-loop turn into one pipelined write.

Under load an API process has many requests in flight; each would otherwise
take a connection from the pool, write one EVALSHA, wait, and give the
connection back. Here every call made before the loop gets back to its I/O
joins one pipeline: one connection checkout, one socket write, replies read
back to back. Each script still runs atomically on its own; a pipeline is not
a transaction and needs none.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import NoScriptError

from .scripts import Operation, missing_function

__all__ = ["Coalescer"]

_MAX_BATCH = 256

_Call = tuple[Operation, list[str], list[Any], "asyncio.Future[Any]"]


class Coalescer:
    def __init__(self, client: Any) -> None:
        self._client = client
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
