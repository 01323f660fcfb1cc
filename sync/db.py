"""PostgreSQL: the pool and the migrations runner."""

from __future__ import annotations

from importlib import resources
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

__all__ = ["Conn", "Pool", "create_pool", "migrate", "pending_migrations"]

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
# A connection of its own, or one taken from a pool.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 0x51_07_4B_EE


async def create_pool(dsn: str, *, size: int, timeout_s: float) -> Pool:
    """A pool whose every statement gives up after ``timeout_s`` (never hangs)."""
    return await asyncpg.create_pool(
        dsn,
        min_size=0,  # start even while PostgreSQL is down; readyz tells
        max_size=size,
        timeout=timeout_s,
        command_timeout=timeout_s,
        server_settings={"application_name": "slotkeeper"},
    )


def _migration_files() -> list[tuple[int, str, str]]:
    folder = resources.files("migrations")
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def pending_migrations(conn: Conn) -> list[str]:
    await _ensure_table(conn)
    applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [name for version, name, _ in _migration_files() if version not in applied]


async def _ensure_table(conn: Conn) -> None:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )


async def migrate(dsn: str) -> list[str]:
    """Apply what is not applied yet, each file in its own transaction; safe to rerun."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        try:
            await _ensure_table(conn)
            rows = await conn.fetch("SELECT version FROM schema_migrations")
            applied = {r["version"] for r in rows}
            done = []
            for version, name, sql in _migration_files():
                if version in applied:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        version,
                        name,
                    )
                done.append(name)
            return done
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    finally:
        await conn.close()
