"""One pure-ASGI layer around every request: request id, timeout, metrics, access log.

Pure ASGI (not BaseHTTPMiddleware) keeps it to a few attribute reads per request.
"""

from __future__ import annotations

import asyncio
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
# Long-lived responses (the SSE stream) are not cut at the request budget; they
# bound their own backend calls.
UNTIMED_PATHS = frozenset({"/events/stream"})


def _request_id(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if 0 < len(value) <= _MAX_REQUEST_ID and all(33 <= c <= 126 for c in value):
                return bytes(value)
            break
    return os.urandom(12).hex().encode()


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

        try:
            # A backend that stops answering must not hold the client: whatever is
            # still running when the budget is spent is cancelled and answered 503.
            untimed = scope["path"] in UNTIMED_PATHS
            budget = None if untimed else self.path_timeouts.get(scope["path"], self.timeout_s)
            async with asyncio.timeout(budget):
                await self.app(scope, receive, send_with_id)
        except TimeoutError:
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
