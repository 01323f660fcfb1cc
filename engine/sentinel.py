"""Redis Sentinel: a client of the named master's current primary.

The client asks the sentinels for the current primary, and asks again when its
connection fails or the server it reaches has become a replica (READONLY), so
the API and the worker follow a failover by themselves. The Redis URL still
gives the database number and credentials; its host and port are not used.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

__all__ = ["connect_sentinel", "parse_sentinels", "url_options"]

# The sentinel pool does not block for a free connection (it fails instead): be generous.
_MIN_CONNECTIONS = 1024


def parse_sentinels(value: str) -> tuple[tuple[str, int], ...]:
    """ "host:port,host:port" -> ((host, port), ...); ValueError if malformed."""
    out = []
    for item in value.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r}: expected host:port[,host:port...]")
        out.append((host, int(port)))
    return tuple(out)


def url_options(url: str) -> dict[str, Any]:
    """Database number and credentials of a redis:// URL."""
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


def connect_sentinel(
    url: str,
    sentinels: tuple[tuple[str, int], ...],
    master: str,
    *,
    max_connections: int,
    timeout_s: float,
) -> Redis:
    """A client of ``master``'s current primary, found through the sentinels."""
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(sentinels),
        sentinel_kwargs={"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s},
    )
    client: _MasterClient = sentinel.master_for(
        master,
        redis_class=_MasterClient,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        max_connections=max(max_connections, _MIN_CONNECTIONS),
        **url_options(url),
    )
    client.sentinel_clients = list(sentinel.sentinels)
    return client
