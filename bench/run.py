"""`make bench`: start slotkeeper, drive every case side by side, write docs/perf.md.

Cases alternate in rounds (same connection count, wrk in its own process) so
that drift of the machine hits every case alike; each figure is the median of
its rounds. Ratios are what matters: absolute numbers depend on the machine.

    python bench/run.py                 # the full run (a few minutes)
    python bench/run.py --smoke         # seconds, tiny load: keeps the harness working
    python bench/run.py --cases 'availability gzip,availability limit=100'
                                        # only these API cases (and bare); written to
                                        # their own part of docs/perf.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.auth import TokenService  # noqa: E402
from api.embedded import EmbeddedServers  # noqa: E402
from api.settings import Settings  # noqa: E402
from api.users import create_user  # noqa: E402
from bench.loadgen import LoadResult, run_load  # noqa: E402
from engine import Engine, Slot  # noqa: E402
from engine.client import RedisClient  # noqa: E402
from sync.db import Pool, migrate  # noqa: E402

BIG = 1_000_000_000
SECRET = "bench-secret-" + "b" * 40


@dataclass
class Case:
    name: str
    target: str  # "api1", "api2", "pg"
    script: str
    path: str
    slots: int = 1000
    path_prefix: str = "/slots/"
    pool: int | None = None
    results: list[LoadResult] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in self.results))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        yield proc
    finally:
        stop(proc, 15)


def stop(proc: subprocess.Popen[Any], timeout_s: float) -> None:
    """Terminate ``proc``; kill it if it has not exited within ``timeout_s``."""
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Bench:
    def __init__(self, args: argparse.Namespace, redis_url: str, server_dsn: str, work: Path):
        self.args = args
        self.work = work
        self.redis_url = redis_url
        self.db_name = f"bench_{uuid.uuid4().hex[:8]}"
        self.dsn = with_db(server_dsn, self.db_name)
        self.server_dsn = server_dsn
        self.prefix = f"bench{uuid.uuid4().hex[:6]}:"
        self.bin = Path(sys.executable).parent
        self.env = {
            **os.environ,
            "SLOTKEEPER_REDIS_URL": redis_url,
            "SLOTKEEPER_DATABASE_URL": self.dsn,
            "SLOTKEEPER_KEY_PREFIX": self.prefix,
            "SLOTKEEPER_JWT_SECRET": SECRET,
            "SLOTKEEPER_PARTITIONS": "16",
            "SLOTKEEPER_MAX_HELD_PER_USER_SLOT": str(BIG),
            "SLOTKEEPER_HOLD_RATE_PER_MINUTE": "0",
            "SLOTKEEPER_ACCESS_LOG": "false",
            "SLOTKEEPER_LOG_LEVEL": "WARNING",
            "SLOTKEEPER_BACKEND_TIMEOUT_MS": "5000",
            "SLOTKEEPER_REDIS_MAX_CONNECTIONS": "128",
        }
        self.settings = Settings.from_env(
            {k: v for k, v in self.env.items() if k.startswith("SLOTKEEPER_")}
        )
        self.token = ""
        self.notes: list[str] = []

    # -- set-up ------------------------------------------------------------------

    async def prepare(self) -> None:
        admin = await asyncpg.connect(self.server_dsn)
        await admin.execute(f'CREATE DATABASE "{self.db_name}"')
        await admin.close()
        await migrate(self.dsn)
        pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4)
        redis = aioredis.Redis.from_url(self.redis_url)
        try:
            user = await create_user(pool, f"bench-{uuid.uuid4().hex[:6]}@example.com", "pw")
            tokens = TokenService(
                secret=SECRET, algorithm="HS256", ttl_s=86_400, refresh_window_s=60,
                redis=redis, key_prefix=self.prefix,
            )  # fmt: skip
            self.token = tokens.issue(user.user_id, "user")["access_token"]
            await self.seed_slots(pool, redis, self.args.slots)
            await pool.execute((ROOT / "bench" / "pg_schema.sql").read_text())
            await pool.executemany(
                "INSERT INTO pg_slots (slot_id, capacity, remaining) VALUES ($1, $2, $2)",
                [(n, BIG) for n in range(1, self.args.slots + 1)],
            )
        finally:
            await pool.close()
            await redis.aclose()

    async def seed_slots(self, pool: Pool, redis: RedisClient, count: int) -> None:
        """Catalog rows by COPY, live counters by load_partition: seconds, not minutes."""
        await pool.execute("DELETE FROM slots")
        await pool.copy_records_to_table(
            "slots",
            records=[(n, BIG, "open") for n in range(1, count + 1)],
            columns=["slot_id", "capacity", "state"],
        )
        engine = Engine(redis, self.settings.engine_settings())
        parts = self.settings.partitions
        for p in range(parts):
            slots = [
                Slot(slot_id=n, capacity=BIG, remaining=BIG, held=0, confirmed=0)
                for n in range(p or parts, count + 1, parts)
            ]
            await engine.load_partition(p, slots, [], epoch=f"bench-{p}")

    async def cleanup(self) -> None:
        """Leave the servers as we found them: our database and keys go."""
        admin = await asyncpg.connect(self.server_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        finally:
            await admin.close()
        redis = aioredis.Redis.from_url(self.redis_url)
        try:
            batch = []
            async for key in redis.scan_iter(match=f"{self.prefix}*", count=5000):
                batch.append(key)
                if len(batch) >= 5000:
                    await redis.unlink(*batch)
                    batch.clear()
            if batch:
                await redis.unlink(*batch)
        finally:
            await redis.aclose()

    # -- servers -------------------------------------------------------------------

    @contextlib.contextmanager
    def api(self, workers: int) -> Iterator[str]:
        port = free_port()
        args = [
            str(self.bin / "slotkeeper"),
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ]
        with process(args, self.env, self.work / f"api{workers}.log") as proc:
            wait_http(f"http://127.0.0.1:{port}/healthz", proc)
            yield f"http://127.0.0.1:{port}"

    @contextlib.contextmanager
    def pg_app(self, pool_size: int, workers: int) -> Iterator[str]:
        port = free_port()
        args = [
            sys.executable, "-m", "uvicorn", "bench.pg_app:create_app", "--factory",
            "--port", str(port), "--workers", str(workers), "--loop", "uvloop",
            "--http", "httptools", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        env = {**self.env, "BENCH_PG_POOL": str(pool_size), "PYTHONPATH": str(ROOT)}
        with process(args, env, self.work / f"pg{pool_size}.log") as proc:
            # The pg app has no health route; a 401 means it is up.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    httpx.post(f"http://127.0.0.1:{port}/pg/slots/1/hold", timeout=1)
                    break
                if proc.poll() is not None:
                    raise RuntimeError("pg app exited")
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"

    @contextlib.contextmanager
    def worker(self) -> Iterator[subprocess.Popen[bytes]]:
        with process(
            [str(self.bin / "slotkeeper"), "worker"], self.env, self.work / "worker.log"
        ) as proc:
            yield proc

    # -- driving -------------------------------------------------------------------

    def drive(self, base: str, case: Case) -> LoadResult:
        return run_load(
            base_url=base,
            script=case.script,
            path=case.path,
            token=self.token,
            slots=case.slots,
            path_prefix=case.path_prefix,
            connections=self.args.connections,
            duration_s=self.args.duration,
            generator=self.args.generator,
        )


async def redis_info(url: str, section: str) -> dict[str, Any]:
    client = aioredis.Redis.from_url(url)
    try:
        info: dict[str, Any] = await client.info(section)
        return info
    finally:
        await client.aclose()


async def reset_stats(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.config_resetstat()
    finally:
        await client.aclose()


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
PARTIAL = "<!-- bench:cases:begin -->", "<!-- bench:cases:end -->"


def write_report(path: Path, report: str, *, partial: bool = False) -> None:
    """Replace the generated part of ``path``; the prose around it is kept.

    A ``--cases`` run has its own part, so it never overwrites the full table.
    """
    begin, end = PARTIAL if partial else (BEGIN, END)
    text = path.read_text() if path.exists() else "# Performance\n"
    if begin not in text:
        text = f"{text.rstrip()}\n\n{begin}\n{end}\n"
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{begin}\n{report}\n{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="a few seconds, tiny load")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per case per round")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--slots", type=int, default=1000)
    parser.add_argument("--catalog-slots", type=int, default=100_000)
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "perf.md")
    parser.add_argument(
        "--cases",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        help="comma-separated API cases to run alone (e.g. 'availability gzip'); bare always runs",
    )
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.duration, args.connections = 1, 1.0, 4
        args.slots, args.catalog_slots = 20, 200
        args.output = None
    from bench.report import run_all

    redis_url = os.environ.get("SLOTKEEPER_BENCH_REDIS_URL") or os.environ.get(
        "SLOTKEEPER_REDIS_URL", ""
    )
    server_dsn = os.environ.get("SLOTKEEPER_BENCH_DATABASE_URL") or os.environ.get(
        "SLOTKEEPER_DATABASE_URL", ""
    )
    work = Path(tempfile.mkdtemp(prefix="slotkeeper-bench-"))
    servers = EmbeddedServers(work / "servers")
    try:
        with servers.running(redis=not redis_url, postgres=not server_dsn):
            redis_url = redis_url or servers.redis_url
            server_dsn = server_dsn or servers.database_url
            bench = Bench(args, redis_url, server_dsn, work)
            # A second deployment (own database and key prefix) with a large catalog.
            catalog = Bench(argparse.Namespace(**{**vars(args), "slots": args.catalog_slots}),
                            redis_url, server_dsn, work)  # fmt: skip
            try:
                asyncio.run(bench.prepare())
                if not args.cases:  # a partial run has no catalog case
                    asyncio.run(catalog.prepare())
                report = run_all(bench, None if args.cases else catalog)
            finally:
                for deployment in (bench, catalog):
                    with contextlib.suppress(Exception):
                        asyncio.run(deployment.cleanup())
            print(report)
            if args.output is not None:
                write_report(args.output, report, partial=bool(args.cases))
                print(f"written to {args.output}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
