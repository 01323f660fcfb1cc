"""What the durable write-behind costs per event: CPU of the drain and PostgreSQL,
and Redis CPU per hold (the hold script and the drain's reads together).

    python bench/costs.py                  # 20,000 holds, 3 runs, medians
    python bench/costs.py --holds 50000 --runs 1

A backlog of hold events is made with the Engine (as bench/report.py's drain rate
does), then drained with ``drain_all`` in this process. Measured around the drain
only: this process's CPU time and that of every process of the PostgreSQL server
(its postmaster and children, from /proc). Measured around the holds and the
drain: the Redis server's CPU (INFO cpu). Servers as bench/run.py picks them:
SLOTKEEPER_BENCH_REDIS_URL / SLOTKEEPER_BENCH_DATABASE_URL if set, else private
ones (a shared server's other clients would count as ours): the embedded
PostgreSQL, and the embedded Valkey without persistence. PostgreSQL
must run on this machine (its processes are read from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import Engine  # noqa: E402
from sync.drain import drain_all  # noqa: E402

if TYPE_CHECKING:
    from engine.client import RedisClient
    from sync.db import Pool

    from .run import Bench

__all__ = [
    "DrainCosts",
    "LiveCosts",
    "drain_costs",
    "hold_backlog",
    "live_costs",
    "postgres_cpu_s",
    "redis_cpu_s",
]

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class DrainCosts:
    events: int  # hold events drained
    events_per_s: float  # drained per second of wall time
    worker_us_per_event: float  # CPU of the draining process
    pg_us_per_event: float  # CPU of all PostgreSQL server processes
    worker_pg_us_per_event: float  # the two together
    redis_us_per_hold: float  # Redis CPU over making the holds and draining them
    redis_drain_us_per_hold: float  # the drain's share of it


async def hold_backlog(engine: Engine, pool: Pool, holds: int, slots: int) -> None:
    """``holds`` holds spread over ``slots`` slots: as many hold events in the streams."""
    user_id = str(await pool.fetchval("SELECT min(user_id) FROM users"))
    run = uuid.uuid4().hex[:6]
    for start in range(0, holds, 500):
        await asyncio.gather(
            *(
                engine.hold(1 + n % slots, user_id, f"d{run}-{n}")
                for n in range(start, min(start + 500, holds))
            )
        )


def _stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (field 3 is index 0)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def _postmaster(backend_pid: int) -> int:
    return int(_stat(backend_pid)[1])  # a backend's parent is the postmaster


def postgres_cpu_s(postmaster: int) -> float:
    """CPU seconds of the postmaster, its live children and the children it reaped."""
    own = _stat(postmaster)
    ticks = sum(int(v) for v in own[11:15])  # utime stime cutime cstime
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = _stat(int(entry.name))
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(stat[1]) == postmaster:
            ticks += int(stat[11]) + int(stat[12])
    return ticks / _TICK


async def redis_cpu_s(redis: RedisClient) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def drain_costs(bench: Bench, holds: int) -> DrainCosts:
    """Make ``holds`` holds, drain them; what each cost (see the module docstring)."""
    redis = aioredis.Redis.from_url(bench.redis_url)
    pool = await asyncpg.create_pool(bench.dsn, min_size=2, max_size=4)
    try:
        engine = Engine(redis, bench.settings.engine_settings())
        await drain_all(engine, redis, pool)  # whatever an earlier run left
        postmaster = _postmaster(int(await pool.fetchval("SELECT pg_backend_pid()")))
        redis_before = await redis_cpu_s(redis)
        await hold_backlog(engine, pool, holds, bench.args.slots)
        redis_held = await redis_cpu_s(redis)
        pg_before = postgres_cpu_s(postmaster)
        cpu_before = time.process_time()
        started = time.perf_counter()
        written = await drain_all(engine, redis, pool)
        wall = time.perf_counter() - started
        worker_s = time.process_time() - cpu_before
        pg_s = postgres_cpu_s(postmaster) - pg_before
        redis_after = await redis_cpu_s(redis)
        per = 1e6 / max(written, 1)
        return DrainCosts(
            events=written,
            events_per_s=written / wall,
            worker_us_per_event=worker_s * per,
            pg_us_per_event=pg_s * per,
            worker_pg_us_per_event=(worker_s + pg_s) * per,
            redis_us_per_hold=(redis_after - redis_before) * 1e6 / holds,
            redis_drain_us_per_hold=(redis_after - redis_held) * 1e6 / holds,
        )
    finally:
        await pool.close()
        await redis.aclose()


# The commands of the drain (sync/drain.py): their share of Redis, from INFO commandstats.
DRAIN_COMMANDS = ("xreadgroup", "xautoclaim", "xack", "xtrim", "xinfo|groups", "xpending",
                  "xrange", "xgroup|create")  # fmt: skip


@dataclass(frozen=True, slots=True)
class LiveCosts:
    holds: int
    redis_us_per_hold: float  # Redis CPU (INFO cpu) over the holds and their drain
    drain_commands_per_hold: float  # drain commands Redis ran, per hold
    drain_command_us_per_hold: float  # their time in Redis (commandstats), per hold
    pg_us_per_event: float  # PostgreSQL CPU per event written
    by_command: dict[str, tuple[float, float]]  # command: (calls, us) per hold


async def _drain_command_stats(redis: RedisClient) -> dict[str, tuple[int, int]]:
    """(calls, usec) of each drain command so far."""
    stats = await redis.info("commandstats")
    found = {name: stats.get(f"cmdstat_{name}", {}) for name in DRAIN_COMMANDS}
    return {n: (int(s.get("calls", 0)), int(s.get("usec", 0))) for n, s in found.items()}


async def live_costs(bench: Bench, holds: int, rate: float = 2000.0) -> LiveCosts:
    """Holds made at ``rate`` per second while the worker's drain loop (SyncService)
    runs beside them, as in production: small batches, every partition polled."""
    from sync.service import SyncService

    redis = aioredis.Redis.from_url(bench.redis_url)
    pool = await asyncpg.create_pool(bench.dsn, min_size=2, max_size=4)
    try:
        engine = Engine(redis, bench.settings.engine_settings())
        await drain_all(engine, redis, pool)
        service = SyncService(engine, redis, pool, consumer=f"costs-{uuid.uuid4().hex[:6]}")
        postmaster = _postmaster(int(await pool.fetchval("SELECT pg_backend_pid()")))
        done = asyncio.Event()

        async def drain_loop() -> int:
            """Until a round after the last hold finds nothing left (no lag polling:
            its Redis commands would count as the drain's)."""
            written = 0
            while True:
                finished = done.is_set()
                round_written = await service.drain_round()
                written += round_written
                if not round_written:
                    if finished:
                        return written
                    await asyncio.sleep(0.01)  # the service's first idle sleep

        redis_before, pg_before = await redis_cpu_s(redis), postgres_cpu_s(postmaster)
        commands_before = await _drain_command_stats(redis)
        task = asyncio.create_task(drain_loop())
        chunk = max(1, int(rate / 100))  # every 10 ms
        user_id = str(await pool.fetchval("SELECT min(user_id) FROM users"))
        run, started = uuid.uuid4().hex[:6], time.monotonic()
        for start in range(0, holds, chunk):
            await asyncio.gather(
                *(
                    engine.hold(1 + n % bench.args.slots, user_id, f"l{run}-{n}")
                    for n in range(start, min(start + chunk, holds))
                )
            )
            await asyncio.sleep(max(0.0, started + (start + chunk) / rate - time.monotonic()))
        done.set()
        written = await task
        commands_after = await _drain_command_stats(redis)
        by_command = {
            name: (
                (commands_after[name][0] - commands_before[name][0]) / holds,
                (commands_after[name][1] - commands_before[name][1]) / holds,
            )
            for name in DRAIN_COMMANDS
        }
        redis_after, pg_after = await redis_cpu_s(redis), postgres_cpu_s(postmaster)
        return LiveCosts(
            holds=holds,
            redis_us_per_hold=(redis_after - redis_before) * 1e6 / holds,
            drain_commands_per_hold=sum(calls for calls, _ in by_command.values()),
            drain_command_us_per_hold=sum(us for _, us in by_command.values()),
            pg_us_per_event=(pg_after - pg_before) * 1e6 / max(written, 1),
            by_command={n: v for n, v in by_command.items() if v[0]},
        )
    finally:
        await pool.close()
        await redis.aclose()


def median_costs(runs: list[DrainCosts]) -> DrainCosts:
    """Each figure's median over the runs (the machine is shared)."""
    return DrainCosts(
        **{f.name: statistics.median(getattr(r, f.name) for r in runs) for f in fields(DrainCosts)}
    )


def _print(label: str, costs: DrainCosts) -> None:
    print(
        f"{label}: {costs.events:,.0f} events, {costs.events_per_s:,.0f} events/s;"
        f" worker {costs.worker_us_per_event:.1f} + PostgreSQL {costs.pg_us_per_event:.1f}"
        f" = {costs.worker_pg_us_per_event:.1f} us CPU per drained event;"
        f" Redis {costs.redis_us_per_hold:.1f} us CPU per hold"
        f" (drain {costs.redis_drain_us_per_hold:.1f})",
        flush=True,
    )


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A Valkey of our own without persistence (the embedded one fsyncs every write,
    which is the disk's cost, not the script's)."""
    from api.embedded import free_port, valkey_binary

    port = free_port()
    args = [valkey_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    proc = subprocess.Popen(
        [*args, "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--holds", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slots", type=int, default=1000)
    parser.add_argument(
        "--live", action="store_true", help="also the drain loop beside paced holds"
    )
    parser.add_argument("--rate", type=float, default=2000.0, help="holds/s in --live")
    args = parser.parse_args()
    from api.embedded import EmbeddedServers
    from bench.run import Bench

    redis_url = os.environ.get("SLOTKEEPER_BENCH_REDIS_URL", "")
    server_dsn = os.environ.get("SLOTKEEPER_BENCH_DATABASE_URL", "")
    work = Path(tempfile.mkdtemp(prefix="slotkeeper-costs-"))
    (work / "servers").mkdir()
    servers = EmbeddedServers(work / "servers")
    try:
        with (
            servers.running(redis=False, postgres=not server_dsn),
            contextlib.ExitStack() as stack,
        ):
            redis_url = redis_url or stack.enter_context(private_redis())
            bench_args: Any = argparse.Namespace(slots=args.slots)
            bench = Bench(bench_args, redis_url, server_dsn or servers.database_url, work)
            try:
                asyncio.run(bench.prepare())
                runs = []
                for n in range(args.runs):
                    runs.append(asyncio.run(drain_costs(bench, args.holds)))
                    _print(f"run {n + 1}/{args.runs}", runs[-1])
                _print("median", median_costs(runs))
                if args.live:
                    live = [asyncio.run(live_costs(bench, args.holds, args.rate))]
                    live += [asyncio.run(live_costs(bench, args.holds, args.rate))
                             for _ in range(args.runs - 1)]  # fmt: skip
                    for costs in live:
                        print(f"live at {args.rate:.0f} holds/s: {costs}", flush=True)
                    print(
                        "live median: Redis"
                        f" {statistics.median(c.redis_us_per_hold for c in live):.1f} us CPU per"
                        " hold; drain commands"
                        f" {statistics.median(c.drain_commands_per_hold for c in live):.3f} per"
                        f" hold, {statistics.median(c.drain_command_us_per_hold for c in live):.2f}"
                        " us per hold; PostgreSQL"
                        f" {statistics.median(c.pg_us_per_event for c in live):.1f} us per event",
                        flush=True,
                    )
            finally:
                asyncio.run(bench.cleanup())
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
