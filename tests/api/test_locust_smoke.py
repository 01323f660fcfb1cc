"""The locust sale (bench/locustfile.py) runs against a live service with 0 failures:
headless, 20 users, 15 s, each logged in as its own bench user."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from api.seed import seed_bench_users

from .live import live_server

_ROOT = Path(__file__).resolve().parents[2]
_USERS = 20


async def test_a_locust_smoke_run_ends_with_no_failures(database: str, tmp_path: Path) -> None:
    async with live_server(database, tmp_path) as server:
        report = await seed_bench_users(server.settings, _USERS)
        assert f"({_USERS} new, 0 existed)" in report[0], report
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLOTKEEPER_", "BENCH_"))}
        env["BENCH_USERS"] = str(_USERS)
        out = await asyncio.to_thread(
            subprocess.run,
            [
                str(Path(sys.executable).with_name("locust")),
                "-f",
                str(_ROOT / "bench" / "locustfile.py"),
                "--headless",
                "--users",
                str(_USERS),
                "--spawn-rate",
                str(_USERS),
                "--run-time",
                "15s",
                "--host",
                server.base_url,
                "--only-summary",
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "| none | | 0 |" in out.stdout, out.stdout[-3000:]
    rows = {line.split(" | ")[0]: line for line in out.stdout.splitlines() if line.startswith("| ")}
    assert "| POST /auth/login" in rows and rows["| POST /auth/login"].endswith("| 0 |")
    assert int(rows["| POST /slots/{slot_id}/hold"].split(" | ")[1]) > 0, out.stdout[-3000:]
