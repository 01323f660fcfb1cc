"""What the sync side needs to run: where the servers are, and the engine's knobs.

Built by the caller (api/settings.py composes it from the environment); sync
never reads ``os.environ``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine import EngineSettings
from engine.client import RedisClient, connect_redis

from .db import Pool, create_pool
from .webhooks import WebhookSettings

__all__ = ["SyncSettings"]


@dataclass(frozen=True, slots=True)
class SyncSettings:
    redis_url: str = ""
    database_url: str = ""
    engine: EngineSettings = field(default_factory=EngineSettings)
    redis_cluster: bool = False
    # Redis Sentinel: the primary of redis_sentinel_master, asked of these
    # (host, port) sentinels; redis_url then gives only the database and credentials.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = "mymaster"
    redis_max_connections: int = 64
    database_pool_size: int = 10
    # Every Redis call gives up after redis_timeout_s, every SQL statement after
    # database_timeout_s: a server away is an error, never a hang.
    redis_timeout_s: float = 1.0
    database_timeout_s: float = 10.0
    # A worker's unacknowledged entries are taken over by another after this long.
    claim_idle_ms: int = 30_000
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    # A slot whose ends_at is past by this long leaves Redis with its holds
    # (sync/archive.py); PostgreSQL answers for it from then on.
    slot_archive_after_s: int = 86_400

    def connect_redis(self, url: str | None = None) -> RedisClient:
        """The primary (``redis_url``, or through the sentinels), or the server at ``url``
        (a read replica: never through the sentinels)."""
        primary = url is None or url == self.redis_url
        return connect_redis(
            url or self.redis_url,
            cluster=self.redis_cluster,
            max_connections=self.redis_max_connections,
            timeout_s=self.redis_timeout_s,
            sentinels=self.redis_sentinels if primary else (),
            sentinel_master=self.redis_sentinel_master,
        )

    async def create_pool(self, size: int | None = None) -> Pool:
        return await create_pool(
            self.database_url,
            size=size or self.database_pool_size,
            timeout_s=self.database_timeout_s,
        )
