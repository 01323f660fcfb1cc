"""The `slotkeeper` command line."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from .settings import ConfigError, Settings

__all__ = ["app", "main"]

app = typer.Typer(help="slotkeeper: slot reservations that never oversell.", no_args_is_help=True)
users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
app.add_typer(users_app, name="users")
console = Console(stderr=True)

DEMO_USER = ("example@mail.ru", "passw0rd!")


def _settings() -> Settings:
    try:
        return Settings.from_env()
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
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )


@app.command()
def migrate() -> None:
    """Apply pending SQL migrations (safe to run twice)."""
    from .db import migrate as run_migrations

    settings = _settings()
    _require(settings, "database_url")
    done = asyncio.run(run_migrations(settings.database_url))
    console.print(f"applied: {', '.join(done)}" if done else "database is up to date")


async def _with_pool(settings: Settings, work: Any) -> Any:
    from .db import create_pool

    pool = await create_pool(settings.database_url, size=2, timeout_s=10)
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
) -> None:
    """Seed demo data (safe to run twice)."""
    if not demo:
        console.print("nothing to seed; pass --demo")
        raise typer.Exit(2)
    from .seed import seed_demo

    settings = _settings()
    _require(settings, "database_url", "redis_url")
    for line in asyncio.run(seed_demo(settings)):
        console.print(line)


def main() -> None:
    app()
