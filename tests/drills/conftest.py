"""Fault drills: a private redis-server the test may SIGKILL, flush and start again
on the same port and data directory, and the app in-process on top of it.

The shared Redis is never touched here: every drill runs on its own server,
stopped by PID when the test ends.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.context import AppContext
from sync.restore import ensure_partitions

# The per-test database fixtures, shared with the API tests.
from ..api.conftest import Harness, database, make_settings, template_db  # noqa: F401
from ..servers import _redis_binary, free_port

_READY_S = 20.0
_STOP_S = 5.0


class PrivateRedis:
    """One redis-server process at a time on a fixed port and directory."""

    def __init__(self, workdir: Path, *args: str) -> None:
        self.workdir = workdir
        self.args = args
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start (or start again, replaying whatever the data directory holds)."""
        if self.running:
            raise RuntimeError("redis-server is already running")
        binary = _redis_binary("redis-server")  # or pip-installed Valkey's
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(self.workdir),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        # While an AOF is replayed the server answers -LOADING, not +PONG.
        deadline = time.monotonic() + _READY_S
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"redis-server on port {self.port} exited at start")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync, no RDB; only what the AOF already has."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError("redis-server is not running")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(_STOP_S)

    def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(_STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(_STOP_S)


@contextlib.contextmanager
def private_redis(workdir: Path, *args: str) -> Iterator[PrivateRedis]:
    """A started PrivateRedis, stopped by PID on the way out whatever happened."""
    server = PrivateRedis(workdir, *args)
    try:
        server.start()
        yield server
    finally:
        server.stop()


RedisFactory = Callable[..., PrivateRedis]
DrillFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[RedisFactory]:
    """Starts private redis-servers (extra server arguments as given) for one test."""
    numbers = itertools.count()
    with contextlib.ExitStack() as stack:

        def factory(*args: str) -> PrivateRedis:
            workdir = tmp_path / f"redis-{next(numbers)}"
            return stack.enter_context(private_redis(workdir, *args))

        yield factory


@pytest.fixture
async def make_drill_harness(database: str) -> AsyncIterator[DrillFactory]:  # noqa: F811
    """The app in-process on a private Redis and a fresh migrated database.

    No sync worker runs unless the test starts one; every partition is built
    (empty) before the factory returns.
    """
    built: list[Harness] = []

    async def factory(server: PrivateRedis, **overrides: Any) -> Harness:
        values: dict[str, Any] = {
            "redis_url": server.url,
            "hold_rate_per_minute": 0,
            "max_held_per_user_slot": 1_000,
            **overrides,
        }
        settings = make_settings(database, **values)
        ctx = await AppContext.build(settings)
        await ensure_partitions(ctx.engine, ctx.redis, ctx.pool)
        app = create_app(settings, context=ctx)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://drill")
        harness = Harness(ctx, client, settings)
        built.append(harness)
        return harness

    yield factory
    for h in built:
        await h.client.aclose()
        await h.ctx.close()
