"""A private Redis Sentinel setup: the primary and replica are PrivateRedis
servers; each sentinel is `redis-server <conf> --sentinel` (or Valkey's), on a
free port, stopped by PID."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from ..servers import _redis_binary, free_port, stop_process

__all__ = ["MASTER", "sentinels"]

MASTER = "drill"


def _conf(port: int, workdir: Path, primary_port: int) -> str:
    return "\n".join(
        [
            f"port {port}",
            "bind 127.0.0.1",
            f"dir {workdir}",
            f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2",
            f"sentinel down-after-milliseconds {MASTER} 1000",
            f"sentinel failover-timeout {MASTER} 10000",
            f"sentinel parallel-syncs {MASTER} 1",
            "",
        ]
    )


@contextlib.contextmanager
def sentinels(workdir: Path, primary_port: int, count: int = 3) -> Iterator[list[int]]:
    """``count`` sentinels watching the primary; yields their ports once they know
    the replica and each other."""
    ports = [free_port() for _ in range(count)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            folder = workdir / f"sentinel-{port}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"
            conf.write_text(_conf(port, folder, primary_port))
            procs.append(
                subprocess.Popen(
                    [_redis_binary("redis-server"), str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        _wait_until_ready(ports, count)
        yield ports
    finally:
        for proc in procs:
            stop_process(proc)


def _wait_until_ready(ports: list[int], count: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready = 0
        for port in ports:
            with contextlib.suppress(redis.RedisError, OSError):
                client = redis.Redis(port=port, socket_timeout=0.5)
                try:
                    if (
                        client.sentinel_slaves(MASTER)
                        and len(client.sentinel_sentinels(MASTER)) == count - 1
                    ):
                        ready += 1
                finally:
                    client.close()
        if ready == count:
            return
        time.sleep(0.1)
    raise RuntimeError("the sentinels did not find the replica and each other in time")
