"""Redis Sentinel: SLOTKEEPER_REDIS_SENTINELS and SLOTKEEPER_REDIS_SENTINEL_MASTER.

The client asks the sentinels for the current primary, and asks again when its
connection fails or the server it reaches has become a replica (READONLY), so
the API and the worker follow a failover by themselves. SLOTKEEPER_REDIS_URL
still gives the database number and credentials; its host and port are not used.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from arq.connections import RedisSettings
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from .settings import ConfigError, Settings

__all__ = ["arq_redis_settings", "connect_sentinel", "sentinel_addresses"]

# The sentinel pool does not block for a free connection (it fails instead): be generous.
_MIN_CONNECTIONS = 1024


def sentinel_addresses(value: str) -> list[tuple[str, int]]:
    """ "host:port,host:port" -> [(host, port), ...]; ConfigError naming the variable."""
    out = []
    for item in value.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"SLOTKEEPER_REDIS_SENTINELS={value!r}: expected host:port[,host:port...]"
            )
        out.append((host, int(port)))
    return out


def _url_options(url: str) -> dict[str, Any]:
    parsed = urlparse(url) if url else None
    options: dict[str, Any] = {}
    if parsed is not None:
        if parsed.path.strip("/").isdigit():
            options["db"] = int(parsed.path.strip("/"))
        if parsed.username:
            options["username"] = parsed.username
        if parsed.password:
            options["password"] = parsed.password
    return options


class _MasterClient(Redis):
    """The primary's client; closing it also closes the clients of the sentinels."""

    sentinel_clients: list[Any]

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for client in getattr(self, "sentinel_clients", []):
            await client.aclose()


def connect_sentinel(url: str, settings: Settings) -> Any:
    """A client of the named master's current primary, found through the sentinels."""
    timeout = settings.backend_timeout_s
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        sentinel_addresses(settings.redis_sentinels),
        sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
    )
    client = sentinel.master_for(
        settings.redis_sentinel_master,
        redis_class=_MasterClient,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=max(settings.redis_max_connections, _MIN_CONNECTIONS),
        **_url_options(url),
    )
    client.sentinel_clients = list(sentinel.sentinels)
    return client


def arq_redis_settings(settings: Settings) -> RedisSettings:
    """The arq worker's own connection: through the sentinels when they are set."""
    if not settings.redis_sentinels:
        return RedisSettings.from_dsn(settings.redis_url)
    options = _url_options(settings.redis_url)
    return RedisSettings(
        host=sentinel_addresses(settings.redis_sentinels),
        sentinel=True,
        sentinel_master=settings.redis_sentinel_master,
        database=options.get("db", 0),
        username=options.get("username"),
        password=options.get("password"),
    )
