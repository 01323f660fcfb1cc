"""API fixtures: a migrated template database per session, a copy per test,
a fresh Redis key prefix per test, the app in-process (httpx ASGI transport)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from api.app import create_app
from api.context import AppContext
from api.db import migrate
from api.settings import Settings
from api.users import create_user
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


@pytest.fixture
async def database(template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test, copied from the template."""
    name = f"sk_t_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database_url())
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield _with_db(database_url(), name)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


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
        settings = make_settings(database, **overrides)
        ctx = await AppContext.build(settings)
        await ensure_partitions(ctx.engine, ctx.redis, ctx.pool)
        app = create_app(settings, context=ctx)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://test")
        harness = Harness(ctx, client, settings)
        built.append(harness)
        return harness

    yield factory
    for h in built:
        await h.client.aclose()
        await _drop_prefix(h.ctx.redis, h.settings.key_prefix)
        await h.ctx.close()


@pytest.fixture
async def harness(make_harness: HarnessFactory) -> Harness:
    return await make_harness()
