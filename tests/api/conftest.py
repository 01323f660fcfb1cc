"""API fixtures: a migrated template database per session, a copy per test (or, with
``shared``, per test module), a fresh Redis key prefix per app, the app in-process
(httpx ASGI transport)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from api.app import create_app
from api.context import AppContext
from api.settings import Settings
from api.users import create_user
from sync.db import migrate
from sync.restore import ensure_partitions

from ..conftest import _drop_prefix, redis_url


def database_url() -> str:
    return os.environ["SLOTKEEPER_TEST_DATABASE_URL"]


def _with_db(url: str, name: str) -> str:
    """The same server, another database (the URL may carry ?host=/socket/dir)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
async def template_db() -> AsyncIterator[str]:
    name = f"sk_tmpl_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url())
    await admin.execute(f'CREATE DATABASE "{name}"')
    await migrate(_with_db(database_url(), name))
    yield name
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@asynccontextmanager
async def copied_database(template_db: str, prefix: str) -> AsyncIterator[str]:
    """A new database copied from the template (its URL), dropped afterwards."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database_url())
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
        try:
            yield _with_db(database_url(), name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def database(template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test, copied from the template."""
    async with copied_database(template_db, "sk_t_") as url:
        yield url


def make_settings(database: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url(),
        "database_url": database,
        "key_prefix": f"t{uuid.uuid4().hex[:10]}:",
        "partitions": 4,
        "jwt_secret": "test-secret-" + "x" * 40,
        "access_log": False,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Harness:
    ctx: AppContext
    client: httpx.AsyncClient
    settings: Settings

    @classmethod
    async def build(cls, settings: Settings, base_url: str = "http://test") -> Harness:
        """The app in-process on whatever servers ``settings`` name, every partition
        built (empty), and an httpx client on it."""
        ctx = await AppContext.build(settings)
        await ensure_partitions(ctx.engine, ctx.redis, ctx.pool)
        # An in-process worker (with_worker) may be building some of them at the same
        # time: ensure_partitions leaves those to it. Wait until every one is built.
        for _ in range(200):
            if not await ctx.engine.unavailable_partitions():
                break
            await asyncio.sleep(0.05)
        app = create_app(settings, context=ctx)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url=base_url)
        return cls(ctx, client, settings)

    async def close(self, *, drop_keys: bool = True) -> None:
        """Close the client and the app's connections; with ``drop_keys`` first remove
        the app's Redis keys (its key prefix)."""
        await self.client.aclose()
        if drop_keys:
            await _drop_prefix(self.ctx.redis, self.settings.key_prefix)
        await self.ctx.close()

    async def user(self, *, admin: bool = False, password: str = "pw-123456") -> dict[str, Any]:
        """A new user and its bearer headers."""
        email = f"{uuid.uuid4().hex[:12]}@example.com"
        user = await create_user(self.ctx.pool, email, password, role="admin" if admin else "user")
        token = self.ctx.tokens.issue(user.user_id, user.role)["access_token"]
        return {
            "user_id": user.user_id,
            "email": email,
            "password": password,
            "headers": {"Authorization": f"Bearer {token}"},
        }

    async def slot(self, capacity: int = 10, **fields: Any) -> int:
        admin = await self.user(admin=True)
        r = await self.client.post(
            "/slots", json={"capacity": capacity, **fields}, headers=admin["headers"]
        )
        assert r.status_code == 201, r.text
        return int(r.json()["slot_id"])


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_harness(database: str) -> AsyncIterator[HarnessFactory]:
    built: list[Harness] = []

    async def factory(**overrides: Any) -> Harness:
        harness = await Harness.build(make_settings(database, **overrides))
        built.append(harness)
        return harness

    yield factory
    for h in built:
        await h.close()


@pytest.fixture
async def harness(make_harness: HarnessFactory) -> Harness:
    return await make_harness()


@dataclass
class Shared:
    """A database for one test module, and harnesses built on it on demand."""

    database: str
    built: list[Harness] = field(default_factory=list)

    @classmethod
    @asynccontextmanager
    async def open(cls, template_db: str) -> AsyncIterator[Shared]:
        async with copied_database(template_db, "sk_m_") as url:
            shared = cls(url)
            try:
                yield shared
            finally:
                await shared.close()

    async def make(self, **overrides: Any) -> Harness:
        """A new app on this database, under a fresh key prefix, with these settings."""
        harness = await Harness.build(make_settings(self.database, **overrides))
        self.built.append(harness)
        return harness

    async def close(self) -> None:
        for h in self.built:
            await h.close()
        self.built.clear()


@pytest.fixture(scope="module")
async def shared(template_db: str) -> AsyncIterator[Shared]:
    """One database for the whole test module (a copy costs more than a key prefix):
    tests that take ``shared`` or ``h`` see each other's rows."""
    async with Shared.open(template_db) as s:
        yield s


@pytest.fixture(scope="module")
async def h(shared: Shared) -> Harness:
    """The test module's app on its ``shared`` database, default settings."""
    return await shared.make()
