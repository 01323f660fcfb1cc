"""The benchmark harness keeps working: `bench/run.py --smoke` (tiny load, seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke_run_reports_every_case() -> None:
    env = {
        **os.environ,
        "SLOTKEEPER_BENCH_REDIS_URL": os.environ["SLOTKEEPER_TEST_REDIS_URL"],
        "SLOTKEEPER_BENCH_DATABASE_URL": os.environ["SLOTKEEPER_TEST_DATABASE_URL"],
    }
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for case in (
        "| bare |",
        "| availability |",
        "| availability gzip |",
        "| availability limit=100 |",
        "| hold-spread |",
        "| hold-hot |",
        "| pg-hot (2w) |",
    ):
        assert case in out.stdout, case
    # Every case answered without errors, whatever the generator.
    rows = [
        line for line in out.stdout.splitlines() if line.startswith("| ") and "req/s" not in line
    ]
    case_rows = [r for r in rows if r.count("|") == 6]
    assert case_rows and all(r.rstrip(" |").endswith(" 0") for r in case_rows), case_rows
    assert "## Targets" in out.stdout
