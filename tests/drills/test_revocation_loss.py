"""Drill 4: a revoked token stays refused after Redis loses its data (FLUSHALL):
in the process that revoked it, in a process started afterwards, and in one
that never synchronised its mirror (it asks Redis, then PostgreSQL)."""

from __future__ import annotations

import asyncio

import jwt
import pytest

from api.revocation import Denylist
from engine import KeySchema

from .conftest import DrillFactory, RedisFactory

pytestmark = pytest.mark.timeout(60)


async def test_revoked_token_survives_flushall(
    make_redis: RedisFactory, make_drill_harness: DrillFactory
) -> None:
    server = make_redis()
    h = await make_drill_harness(server)
    user = await h.user()
    old = user["headers"]
    r = await h.client.post("/auth/refresh", headers=old)
    assert r.status_code == 200, r.text
    new = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert (await h.client.get("/holds", headers=old)).status_code == 401
    revoked = await h.ctx.pool.fetchval("SELECT count(*) FROM revoked_tokens")

    await h.ctx.redis.flushall()  # the private server only

    refused = {"same process": (await h.client.get("/holds", headers=old)).status_code}
    # A process started after the loss learns the revocation from PostgreSQL.
    later = await make_drill_harness(server)
    for _ in range(200):
        if later.ctx.tokens.denylist.synced:
            break
        await asyncio.sleep(0.01)
    assert later.ctx.tokens.denylist.synced
    refused["later process"] = (await later.client.get("/holds", headers=old)).status_code
    refused["refresh again"] = (await later.client.post("/auth/refresh", headers=old)).status_code
    # The later process put the revocation back into Redis for whoever asks it.
    token = old["Authorization"].removeprefix("Bearer ")
    jti = jwt.decode(token, h.settings.jwt_secret, algorithms=["HS256"])["jti"]
    revoked_set = KeySchema(later.settings.key_prefix).revoked()
    assert await h.ctx.redis.zscore(revoked_set, jti) is not None
    # One that never synchronised asks Redis, then PostgreSQL: Redis lost it again.
    await h.ctx.redis.flushall()
    unsynced = Denylist(h.ctx.redis, h.settings.key_prefix, mirror=False, pool=h.ctx.pool)
    refused["unsynced mirror"] = 401 if await unsynced.is_revoked(jti) else 200
    works = (await later.client.get("/holds", headers=new)).status_code
    print(
        f"[revocation] {revoked} revoked token(s) on record; after FLUSHALL the old token"
        f" answers {refused}; the new one {works}"
    )
    assert refused == {
        "same process": 401,
        "later process": 401,
        "refresh again": 401,
        "unsynced mirror": 401,
    }
    assert works == 200
