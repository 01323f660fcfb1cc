"""A token refreshed through one process is refused by every process at once."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

from api.revocation import Denylist

from ..conftest import redis_url


async def _synced(denylist: Denylist) -> None:
    for _ in range(200):
        if denylist.synced:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("denylist did not synchronise")


async def test_revocation_reaches_other_processes_mirror() -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    first_client = aioredis.Redis.from_url(redis_url())
    second_client = aioredis.Redis.from_url(redis_url())
    earlier = Denylist(first_client, prefix)
    # Revoked before the second process starts: it must learn it from its load.
    assert await earlier.revoke("old-jti", 60)
    first, second = Denylist(first_client, prefix), Denylist(second_client, prefix)
    first.start()
    second.start()
    try:
        await _synced(first)
        await _synced(second)
        assert await second.is_revoked("old-jti")
        assert not await second.is_revoked("new-jti")
        assert await first.revoke("new-jti", 60)
        assert not await first.revoke("new-jti", 60)  # once only
        for _ in range(200):
            if await second.is_revoked("new-jti"):
                break
            await asyncio.sleep(0.01)
        assert await second.is_revoked("new-jti")
    finally:
        await first.stop()
        await second.stop()
        async for key in first_client.scan_iter(match=f"{prefix}*"):
            await first_client.delete(key)
        await first_client.aclose()
        await second_client.aclose()


async def test_an_unsynchronised_denylist_asks_redis() -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    client = aioredis.Redis.from_url(redis_url())
    writer = Denylist(client, prefix)
    reader = Denylist(client, prefix, mirror=False)  # never synchronises
    try:
        assert await writer.revoke("jti-1", 60)
        assert not reader.synced
        assert await reader.is_revoked("jti-1")
        assert not await reader.is_revoked("jti-2")
    finally:
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)
        await client.aclose()
