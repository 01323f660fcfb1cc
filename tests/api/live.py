"""A real `slotkeeper serve` process (uvicorn, uvloop, httptools) for end-to-end tests;
with ``PrivateRedis`` (tests/servers.py), a private redis-server the test can stop,
pause and restart.

Not a test module: tests use ``async with live_server(...)`` and ``PrivateRedis``.
Both are stopped by PID (terminate, then kill), never by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import httpx

from api.context import connect_redis
from api.settings import Settings
from api.users import create_user
from engine import Engine
from sync.db import create_pool
from sync.restore import ensure_partitions

from ..conftest import _drop_prefix
from ..servers import free_port, stop_process
from .conftest import make_settings

__all__ = ["LiveServer", "live_server"]

_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_STARTUP_S = 20.0
PASSWORD = "pw-live-123456"


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def settings_env(settings: Settings) -> dict[str, str]:
    """The process environment that makes ``Settings.from_env()`` equal ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLOTKEEPER_")}
    for f in fields(Settings):
        env["SLOTKEEPER_" + f.name.upper()] = _env_value(getattr(settings, f.name))
    return env


@dataclass
class LiveServer:
    base_url: str
    settings: Settings
    process: subprocess.Popen[bytes]
    log_path: Path
    # The test's own view of the same backends, for setup and inspection.
    pool: Any
    redis: Any
    engine: Engine

    def client(self, *, max_connections: int = 20, timeout_s: float = 10.0) -> httpx.AsyncClient:
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        return httpx.AsyncClient(base_url=self.base_url, limits=limits, timeout=timeout_s)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def user(self, client: httpx.AsyncClient, *, admin: bool = False) -> dict[str, Any]:
        """A new user in the database, logged in over HTTP; its bearer headers."""
        email = f"{uuid.uuid4().hex[:12]}@example.com"
        user = await create_user(self.pool, email, PASSWORD, role="admin" if admin else "user")
        r = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
        if r.status_code != 200:
            raise AssertionError(f"login failed: {r.status_code} {r.text}")
        token = r.json()["access_token"]
        return {
            "user_id": user.user_id,
            "email": email,
            "headers": {"Authorization": f"Bearer {token}"},
        }

    async def slot(self, client: httpx.AsyncClient, admin: dict[str, Any], capacity: int) -> int:
        r = await client.post("/slots", json={"capacity": capacity}, headers=admin["headers"])
        if r.status_code != 201:
            raise AssertionError(f"slot not created: {r.status_code} {r.text}")
        return int(r.json()["slot_id"])


async def _wait_healthy(server: LiveServer) -> None:
    deadline = time.monotonic() + _STARTUP_S
    async with httpx.AsyncClient(base_url=server.base_url, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"slotkeeper serve exited with {server.process.returncode}:\n"
                    + server.log_tail()
                )
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"slotkeeper serve did not become healthy:\n{server.log_tail()}")


def _spawn(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                str(Path(sys.executable).with_name("slotkeeper")),
                "serve",
                "--host",
                settings.host,
                "--port",
                str(settings.port),
            ],
            env=settings_env(settings),
            cwd=_PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@contextlib.asynccontextmanager
async def live_server(database: str, workdir: Path, **overrides: Any) -> AsyncIterator[LiveServer]:
    """`slotkeeper serve` on a free port against ``database`` (migrated) and Redis
    (the shared one under a fresh key prefix unless ``redis_url`` is given), every
    partition built before it starts."""
    port = free_port()
    settings = make_settings(
        database,
        host="127.0.0.1",
        port=port,
        data_dir=workdir / "data",
        log_level="WARNING",
        **overrides,
    )
    redis = connect_redis(settings.redis_url, settings)
    pool = await create_pool(settings.database_url, size=4, timeout_s=10)
    engine = Engine(redis, settings.engine_settings())
    log_path = workdir / f"serve-{port}.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        await ensure_partitions(engine, redis, pool)
        proc = _spawn(settings, log_path)
        server = LiveServer(
            base_url=f"http://127.0.0.1:{port}",
            settings=settings,
            process=proc,
            log_path=log_path,
            pool=pool,
            redis=redis,
            engine=engine,
        )
        await _wait_healthy(server)
        yield server
    finally:
        if proc is not None:
            await asyncio.to_thread(stop_process, proc)
        with contextlib.suppress(Exception):  # a private Redis may be gone already
            async with asyncio.timeout(5):
                await _drop_prefix(redis, settings.key_prefix)
        await redis.aclose()
        await pool.close()
