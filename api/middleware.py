"""One pure-ASGI layer around every request: request id, timeout, metrics, access log.

Pure ASGI (not BaseHTTPMiddleware) keeps it to a few attribute reads per request.
The request budget is not an ``asyncio.timeout`` per request (a Timeout object
and a loop timer each, ~5% of the API's CPU under load): the requests in flight
sit in one dict, and one timer per tick cancels those past their deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import Problem
from .user_ids import user_id_json

__all__ = ["RequestMiddleware"]

log = logging.getLogger("slotkeeper.access")
_MAX_REQUEST_ID = 128
# How often the requests in flight are checked against their deadline: a request
# is cut at most this late (or a tenth of the shortest budget, if that is less).
_TICK_S = 0.05
# Long-lived responses (the SSE stream) are not cut at the request budget; they
# bound their own backend calls.
UNTIMED_PATHS = frozenset({"/events/stream"})


class _InFlight:
    """A request's deadline, and whether the sweep cancelled it for passing it."""

    __slots__ = ("cancelling", "deadline", "expired")

    def __init__(self, deadline: float, cancelling: int) -> None:
        self.deadline = deadline
        self.cancelling = cancelling  # the task's cancel requests before ours
        self.expired = False


def _request_id(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if 0 < len(value) <= _MAX_REQUEST_ID and all(33 <= c <= 126 for c in value):
                return bytes(value)
            break
    # Made: unique, not secret. A random prefix per process and a counter (24 hex
    # digits, as before) instead of a getrandom() call per request.
    return b"%s%012x" % (_ID_PREFIX[0], next(_ID_COUNTER))


def _new_id_prefix() -> None:
    _ID_PREFIX[0] = os.urandom(6).hex().encode()


_ID_PREFIX = [b""]
_ID_COUNTER = itertools.count()
_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)  # a forked worker makes its own


class RequestMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        timeout_s: float,
        metrics: Any,
        access_log: bool,
        path_timeouts: dict[str, float] | None = None,
    ) -> None:
        self.app = app
        self.timeout_s = timeout_s
        # Paths with their own budget (login: its hash queue, see api/hashing.py).
        self.path_timeouts = path_timeouts or {}
        self.metrics = metrics
        self.access_log = access_log
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        budgets = [timeout_s, *self.path_timeouts.values()]
        self._tick_s = max(0.001, min(_TICK_S, min(budgets) / 10))
        self._in_flight: dict[asyncio.Task[Any], _InFlight] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweeper_loop: asyncio.AbstractEventLoop | None = None

    def _sweep(self) -> None:
        """Cancel the requests past their deadline; run again while any are in flight."""
        self._sweeper = None
        if not self._in_flight:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for task, entry in list(self._in_flight.items()):
            if task.done() or task.get_loop() is not loop:  # left over from a closed loop
                self._in_flight.pop(task, None)
            elif not entry.expired and entry.deadline <= now:
                entry.expired = True
                task.cancel()
        self._sweeper = loop.call_at(now + self._tick_s, self._sweep)

    def _track(self, budget: float) -> tuple[asyncio.Task[Any], _InFlight] | None:
        task = asyncio.current_task()
        if task is None:
            return None
        loop = asyncio.get_running_loop()
        entry = _InFlight(loop.time() + budget, task.cancelling())
        self._in_flight[task] = entry
        if self._sweeper is None or self._sweeper_loop is not loop:
            self._sweeper_loop = loop
            self._sweeper = loop.call_at(loop.time() + self._tick_s, self._sweep)
        return task, entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        # A backend that stops answering must not hold the client: whatever is
        # still running when the budget is spent is cancelled and answered 503.
        path = scope["path"]
        tracked = (
            None
            if path in UNTIMED_PATHS
            else self._track(self.path_timeouts.get(path, self.timeout_s))
        )
        try:
            try:
                await self.app(scope, receive, send_with_id)
                if tracked is not None and tracked[1].expired:
                    tracked[0].uncancel()  # done just as the budget ran out
            except asyncio.CancelledError:
                # Ours only if the sweep cancelled it and nobody else did too.
                if tracked is None or not tracked[1].expired:
                    raise
                task, entry = tracked
                if task.uncancel() > entry.cancelling:
                    raise
                raise TimeoutError from None
            finally:
                if tracked is not None:
                    self._in_flight.pop(tracked[0], None)
        except TimeoutError:  # ours, or a backend's own (asyncpg raises it too)
            if response_started:
                raise
            problem = Problem(
                "backend-unavailable",
                "a backing service did not answer in time; retry shortly",
                headers={"Retry-After": "1"},
            )
            await problem.response()(scope, receive, send_with_id)
        finally:
            self._observe(scope, status, time.perf_counter() - started, request_id)

    def _observe(self, scope: Scope, status: int, elapsed_s: float, request_id: bytes) -> None:
        route = scope.get("route")
        template = route.path if route is not None else "unmatched"
        method = scope["method"]
        key = (template, method, status)
        children = self._children.get(key)
        if children is None:  # labels() takes a lock and builds a tuple: once per key
            children = (
                self.metrics.requests.labels(template, method, str(status)),
                self.metrics.latency.labels(template, method),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(elapsed_s)
        if self.access_log and log.isEnabledFor(logging.INFO):
            state = scope.get("state") or {}
            user_id = state.get("user_id")
            log.info(
                orjson.dumps(
                    {
                        "event": "request",
                        "request_id": request_id.decode(),
                        "method": method,
                        "route": template,
                        "path": scope["path"],
                        "status": status,
                        "latency_ms": round(elapsed_s * 1000, 3),
                        "user_id": user_id and user_id_json(user_id),
                    }
                ).decode()
            )
