"""The rounds, the extra measurements, and the docs/perf.md report."""

from __future__ import annotations

import asyncio
import platform
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING

import asyncpg
import redis.asyncio as aioredis

from engine import Engine
from sync.drain import drain_all

from .costs import hold_backlog
from .loadgen import wrk_available

if TYPE_CHECKING:
    from .run import Bench, Case

PG_POOLS = (4, 8, 16, 32)
MEMORY_HOLDS = 20_000


@dataclass
class Extras:
    """The measurements made outside the wrk rounds (zero: not measured in this run)."""

    evalsha_us: float = 0.0  # hold script server time under the bench (context)
    drained: int = 0
    drain_rate: float = 0.0
    memory_per_hold: float = 0.0
    script_us: float = 0.0  # hold script, idle private Redis (bench/script_cost.py)
    worker_pg_us: float = 0.0  # worker + PostgreSQL CPU per drained event (bench/costs.py)
    redis_us_per_hold: float = 0.0  # Redis CPU per hold, script and drain reads
    memory_ratio: float = 0.0  # Redis memory after 30 simulated days / after day 1
    memory_note: str = ""


def _cases(bench: Bench) -> dict[str, Case]:
    from .run import Case

    n = bench.args.slots
    return {
        c.name: c
        for c in (
            Case("bare", "api1", "get.lua", "/auth/whoami"),
            Case("availability", "api1", "get.lua", "/slots/availability"),
            Case("availability gzip", "api1", "get_gzip.lua", "/slots/availability"),
            Case("availability limit=100", "api1", "get.lua", "/slots/availability?limit=100"),
            Case("hold-spread", "api1", "hold.lua", "/slots/1/hold", slots=n),
            Case("hold-hot", "api1", "hold.lua", "/slots/1/hold", slots=1),
            Case("hold-confirm", "api1", "hold_confirm.lua", "/slots/1/hold", slots=n),
            Case("hold-batch", "api1", "hold_batch.lua", "/holds/batch", slots=n),
            Case("bare (2w)", "api2", "get.lua", "/auth/whoami"),
            Case("hold-spread (2w)", "api2", "hold.lua", "/slots/1/hold", slots=n),
            Case("hold-hot (2w)", "api2", "hold.lua", "/slots/1/hold", slots=1),
            Case(
                "pg-spread (2w)",
                "pg",
                "hold.lua",
                "/pg/slots/1/hold",
                slots=n,
                path_prefix="/pg/slots/",
            ),
            Case(
                "pg-hot (2w)",
                "pg",
                "hold.lua",
                "/pg/slots/1/hold",
                slots=1,
                path_prefix="/pg/slots/",
            ),
        )
    }


def _pick_pg_pools(bench: Bench, cases: dict[str, Case]) -> None:
    """The row-lock design at its best pool size: a short calibration per size."""
    short = max(1.0, bench.args.duration / 3)
    for name in ("pg-hot (2w)", "pg-spread (2w)"):
        best: tuple[float, int] = (-1.0, PG_POOLS[0])
        for size in PG_POOLS if not bench.args.smoke else PG_POOLS[:1]:
            with bench.pg_app(size, workers=2) as base:
                case = cases[name]
                saved = bench.args.duration
                bench.args.duration = short
                try:
                    result = bench.drive(base, case)
                finally:
                    bench.args.duration = saved
            bench.notes.append(f"{name} pool {size}: {result.requests_per_s:.0f} req/s")
            best = max(best, (result.requests_per_s, size))
        cases[name].pool = best[1]


async def _evalsha_cost_us(url: str) -> float:
    client = aioredis.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
        # FCALL where the server has Redis Functions, EVALSHA elsewhere (engine/scripts.py).
        runs = [stats.get(f"cmdstat_{c}", {}) for c in ("fcall", "evalsha")]
        calls = sum(r.get("calls", 0) for r in runs)
        return sum(r.get("usec", 0) for r in runs) / calls if calls else 0.0
    finally:
        await client.aclose()


async def _reset_stats(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.config_resetstat()
    finally:
        await client.aclose()


async def _memory_per_hold(bench: Bench) -> float:
    """Bytes of Redis memory per active hold once its event is drained."""
    redis = aioredis.Redis.from_url(bench.redis_url)
    pool = await asyncpg.create_pool(bench.dsn, min_size=1, max_size=4)
    try:
        engine = Engine(redis, bench.settings.engine_settings())
        user_id = str(await pool.fetchval("SELECT min(user_id) FROM users"))
        await drain_all(engine, redis, pool)
        before = (await redis.info("memory"))["used_memory"]
        run = uuid.uuid4().hex[:6]
        for start in range(0, MEMORY_HOLDS, 500):
            await asyncio.gather(
                *(
                    engine.hold(1 + n % bench.args.slots, user_id, f"{run}-{n:08d}")
                    for n in range(start, min(start + 500, MEMORY_HOLDS))
                )
            )
        await drain_all(engine, redis, pool)
        after = (await redis.info("memory"))["used_memory"]
        return float(after - before) / MEMORY_HOLDS
    finally:
        await pool.close()
        await redis.aclose()


async def _drain_rate(bench: Bench, events: int) -> tuple[int, float]:
    """Write a backlog of hold events, then time the worker's drain path over it."""
    redis = aioredis.Redis.from_url(bench.redis_url)
    pool = await asyncpg.create_pool(bench.dsn, min_size=2, max_size=4)
    try:
        engine = Engine(redis, bench.settings.engine_settings())
        await drain_all(engine, redis, pool)
        await hold_backlog(engine, pool, events, bench.args.slots)
        started = time.perf_counter()
        written = await drain_all(engine, redis, pool)
        return written, written / (time.perf_counter() - started)
    finally:
        await pool.close()
        await redis.aclose()


API1 = ("bare", "availability", "availability gzip", "availability limit=100",
        "hold-spread", "hold-hot", "hold-confirm", "hold-batch")  # fmt: skip
BATCH_ITEMS = 100  # bench/wrk/hold_batch.lua's default
API2 = ("bare (2w)", "hold-spread (2w)", "hold-hot (2w)")


def run_some(bench: Bench, names: list[str]) -> str:
    """``--cases``: only the named cases of the API (and the bare route to compare with)."""
    cases = _cases(bench)
    unknown = [n for n in names if n not in cases or cases[n].target == "pg"]
    if unknown:
        raise SystemExit(f"unknown or unsupported cases: {unknown}; pick from {API1 + API2}")
    for round_no in range(bench.args.rounds):
        print(f"round {round_no + 1}/{bench.args.rounds}", flush=True)
        for workers, group in ((1, API1), (2, API2)):
            chosen = [n for n in group if n in names or n == group[0]]
            if chosen == [group[0]] and group[0] not in names:
                continue
            with bench.worker(), bench.api(workers) as base:
                for name in chosen:
                    cases[name].results.append(bench.drive(base, cases[name]))
    return render(bench, cases, None, Extras())


def run_all(bench: Bench, catalog: Bench | None = None) -> str:
    if bench.args.cases:
        return run_some(bench, bench.args.cases)
    cases = _cases(bench)
    _pick_pg_pools(bench, cases)
    catalog_case = None
    if catalog is not None:
        from .run import Case

        catalog_case = Case(
            "hold-spread (100k catalog)", "api1", "hold.lua", "/slots/1/hold",
            slots=catalog.args.catalog_slots,
        )  # fmt: skip
    extras = Extras()
    for round_no in range(bench.args.rounds):
        print(f"round {round_no + 1}/{bench.args.rounds}", flush=True)
        with bench.worker():
            with bench.api(1) as base:
                for name in API1:
                    if name == "hold-spread" and round_no == 0:
                        asyncio.run(_reset_stats(bench.redis_url))
                    cases[name].results.append(bench.drive(base, cases[name]))
                    if name == "hold-spread" and round_no == 0:
                        extras.evalsha_us = asyncio.run(_evalsha_cost_us(bench.redis_url))
            with bench.api(2) as base:
                for name in API2:
                    cases[name].results.append(bench.drive(base, cases[name]))
        for name in ("pg-spread (2w)", "pg-hot (2w)"):
            with bench.pg_app(cases[name].pool or 8, workers=2) as base:
                cases[name].results.append(bench.drive(base, cases[name]))
        if catalog is not None and catalog_case is not None:
            with catalog.worker(), catalog.api(1) as base:
                catalog_case.results.append(catalog.drive(base, catalog_case))
    backlog = 2_000 if bench.args.smoke else 50_000
    extras.drained, extras.drain_rate = asyncio.run(_drain_rate(bench, backlog))
    if not bench.args.smoke:
        extras.memory_per_hold = asyncio.run(_memory_per_hold(bench))
    _costs(bench, extras)
    return render(bench, cases, catalog_case, extras)


def _costs(bench: Bench, extras: Extras) -> None:
    """The script, drain and memory rows: each measured by its own bench module."""
    from .costs import drain_costs
    from .memory_days import memory_growth
    from .script_cost import hold_script_us

    smoke = bench.args.smoke
    extras.script_us = hold_script_us(calls=2_000 if smoke else 100_000)
    costs = asyncio.run(drain_costs(bench, 2_000 if smoke else 20_000))
    extras.worker_pg_us = costs.worker_pg_us_per_event
    extras.redis_us_per_hold = costs.redis_us_per_hold
    days, per_day = (3, 20) if smoke else (30, 1_000)
    growth = asyncio.run(
        memory_growth(bench.redis_url, bench.server_dsn, days=days, slots_per_day=per_day)
    )
    extras.memory_ratio = growth.ratio
    extras.memory_note = (
        f"memory: {days} simulated days of {per_day:,} slots (half sold, published a day"
        f" ahead, archived a day after they end): {growth.day1_bytes:,} bytes after day 1,"
        f" {growth.last_bytes:,} after day {days}; {growth.archived_holds:,} archived holds"
        " all read from PostgreSQL."
    )


def _row(case: Case) -> str:
    r = case.results
    errors = sum(x.errors for x in r)
    return (
        f"| {case.name} | {case.median('requests_per_s'):,.0f} | {case.median('p50_ms'):.2f} |"
        f" {case.median('p99_ms'):.2f} | {errors} |"
    )


def _versions() -> str:
    names = ("starlette", "uvicorn", "redis", "hiredis", "asyncpg", "orjson", "pyjwt", "uvloop")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def _server_versions(bench: Bench) -> str:
    async def go() -> str:
        client = aioredis.Redis.from_url(bench.redis_url)
        conn = await asyncpg.connect(bench.dsn)
        try:
            info = await client.info("server")
            name = "valkey" if "valkey_version" in info else "redis"
            version = info.get("valkey_version") or info.get("redis_version")
            pg = await conn.fetchval("SHOW server_version")
            return f"{name} {version}, PostgreSQL {pg}"
        finally:
            await conn.close()
            await client.aclose()

    return asyncio.run(go())


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line
        )
    except (OSError, StopIteration):
        model = platform.processor() or "unknown"
    import os

    return f"{model}, {os.cpu_count()} CPUs"


def render(
    bench: Bench,
    cases: dict[str, Case],
    catalog_case: Case | None,
    extras: Extras,
) -> str:
    def rps(name: str) -> float:
        return cases[name].median("requests_per_s")

    def p99(name: str) -> float:
        return cases[name].median("p99_ms")

    targets: list[tuple[str, float, str, bool]] = []

    def target(label: str, value: float, goal: str, ok: bool) -> None:
        targets.append((label, value, goal, ok))

    def ran(*names: str) -> bool:
        return all(cases[n].results for n in names)

    def at_least(label: str, name: str, base: str, goal: float) -> None:
        if ran(name, base):
            ratio = rps(name) / max(rps(base), 1e-9)
            target(label, ratio, f">= {goal:g}", ratio >= goal)

    def at_most(label: str, value: float, goal: float) -> None:
        if value > 0:
            target(label, value, f"<= {goal:g}", value <= goal)

    # The issue-12 targets: ratios to the bare route of the same server, measured in one run.
    at_least("hold-spread / bare, 1 API worker, sync worker draining", "hold-spread", "bare", 0.5)
    at_least("hold-hot / bare, 2 API workers", "hold-hot (2w)", "bare (2w)", 0.5)
    if ran("hold-spread", "bare"):
        at_most("hold-spread p99 / bare p99", p99("hold-spread") / max(p99("bare"), 1e-9), 2)
    at_least("availability, all 1,000 slots, gzip / bare", "availability gzip", "bare", 0.6)
    at_least("availability ?limit=100 / bare", "availability limit=100", "bare", 0.8)
    at_least("availability (identity) / bare", "availability", "bare", 0.8)
    if ran("hold-batch", "hold-spread"):
        batch = rps("hold-batch") * BATCH_ITEMS / max(rps("hold-spread"), 1e-9)
        target("hold-batch holds/s / hold-spread req/s", batch, ">= 5", batch >= 5)
    if catalog_case is not None and catalog_case.results:
        cat = catalog_case.median("requests_per_s") / rps("hold-spread")
        target("hold-spread 100k catalog / 1k catalog", cat, ">= 0.9", cat >= 0.9)
    if extras.drain_rate and ran("hold-spread"):
        drain_ratio = extras.drain_rate / rps("hold-spread")
        target("drain events/s / hold-spread req/s", drain_ratio, ">= 3", drain_ratio >= 3)
    at_most("hold script, mean server time, idle private Redis (us)", extras.script_us, 20)
    at_most("worker + PostgreSQL CPU per drained event (us)", extras.worker_pg_us, 60)
    at_most("Redis CPU per hold, script and drain reads (us)", extras.redis_us_per_hold, 30)
    at_most("Redis memory after 30 simulated days / after day 1", extras.memory_ratio, 1.2)
    if extras.memory_per_hold:
        at_most("Redis bytes per active hold", extras.memory_per_hold, 400)
    # The row-lock design, as context (on two cores no hold beats the bare route).
    context: list[str] = []
    if ran("hold-hot (2w)", "pg-hot (2w)", "hold-spread (2w)", "pg-spread (2w)"):
        context = [
            f"hold-hot / pg-hot req/s (2 workers): {rps('hold-hot (2w)') / rps('pg-hot (2w)'):.2f}",
            f"hold-hot p99 / pg-hot p99 (2 workers):"
            f" {p99('hold-hot (2w)') / max(p99('pg-hot (2w)'), 1e-9):.2f}",
            f"hold-spread / pg-spread (2 workers):"
            f" {rps('hold-spread (2w)') / rps('pg-spread (2w)'):.2f}",
        ]
    if extras.evalsha_us:
        context.append(
            f"hold script server time under the bench (Redis shared with wrk, the API and the"
            f" worker): {extras.evalsha_us:.1f} us/call"
        )
    full = ran("pg-hot (2w)")

    lines = [
        "## Latest run" if full else "## Latest partial run (`--cases`)",
        "",
        "Written by `make bench` (bench/run.py); the prose outside this part is kept.",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {_cpu()}, {platform.platform()}",
        f"- servers: {_server_versions(bench)}",
        f"- Python {platform.python_version()}: {_versions()}",
        f"- load generator: {'wrk -t1' if wrk_available() else 'bench/pyload.py'},"
        f" {bench.args.connections} connections, {bench.args.duration:g} s per case,"
        f" {bench.args.rounds} rounds alternating the cases; figures are medians of the rounds",
        f"- command: `python bench/run.py --rounds {bench.args.rounds}"
        f" --duration {bench.args.duration:g} --connections {bench.args.connections}"
        f" --slots {bench.args.slots}"
        + (f" --cases '{','.join(bench.args.cases)}'`" if bench.args.cases else "`"),
        "- API: `slotkeeper serve --workers N` (uvloop, httptools), access log off, hold rate limit"
        " off, per-user cap raised; `slotkeeper worker` draining meanwhile",
        "",
        "| case | req/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
        *(_row(c) for c in cases.values() if c.results),
    ]
    if catalog_case is not None and catalog_case.results:
        lines.append(_row(catalog_case))
    if ran("hold-batch"):
        lines.append(
            f"\nhold-batch: {BATCH_ITEMS} holds a request,"
            f" {rps('hold-batch') * BATCH_ITEMS:,.0f} holds/s."
        )
    if full:
        lines += [
            "",
            f"pg cases: the row-lock design at its best pool size"
            f" (hot: {cases['pg-hot (2w)'].pool}, spread: {cases['pg-spread (2w)'].pool});"
            " calibration: " + "; ".join(bench.notes) + ".",
            "",
            f"drain: {extras.drained:,} hold events written to PostgreSQL at"
            f" {extras.drain_rate:,.0f} events/s"
            " (the worker's batch path: XREADGROUP 500, one transaction, XACK).",
        ]
    if extras.memory_note:
        lines += ["", extras.memory_note]
    lines += [
        "",
        "### Targets",
        "",
        "| target | measured | goal | met |",
        "|---|---:|---|---|",
        *(
            f"| {label} | {value:.2f} | {goal} | {'yes' if ok else '**no**'} |"
            for label, value, goal, ok in targets
        ),
        "",
    ]
    if context:
        lines += ["Context (not targets):", "", *(f"- {line}" for line in context), ""]
    return "\n".join(lines)
