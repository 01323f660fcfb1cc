"""Load generators: wrk (preferred) or a small keep-alive generator of our own.

Each runs in its own process, so it never shares an event loop with the server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LoadResult", "run_load", "wrk_available"]

WRK_DIR = Path(__file__).resolve().parent / "wrk"


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx answers and socket errors
    generator: str


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def _run_wrk(
    url: str, script: str, env: dict[str, str], connections: int, duration_s: float
) -> LoadResult:
    out = subprocess.run(
        [
            "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--latency",
            "-s", str(WRK_DIR / script), url,
        ],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {
        p: _ms(v, u)
        for p, v, u in re.findall(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    }
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    return LoadResult(rps, pct.get("50", 0.0), pct.get("99", 0.0), total, errors, "wrk")


def run_load(
    *,
    base_url: str,
    script: str,
    path: str,
    token: str,
    slots: int,
    path_prefix: str,
    connections: int,
    duration_s: float,
    generator: str = "auto",
) -> LoadResult:
    env = {
        **os.environ,
        "BENCH_TOKEN": token,
        "BENCH_SLOTS": str(slots),
        "BENCH_PATH_PREFIX": path_prefix,
        "BENCH_WRK_DIR": str(WRK_DIR),
    }
    if generator == "wrk" or (generator == "auto" and wrk_available()):
        return _run_wrk(base_url + path, script, env, connections, duration_s)
    out = subprocess.run(
        [
            sys.executable, "-m", "bench.pyload", "--url", base_url, "--script", script,
            "--path", path, "--connections", str(connections), "--duration", str(duration_s),
        ],
        env={**env, "PYTHONPATH": str(WRK_DIR.parent.parent)},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps, p50, p99, total, errors = out.split()
    return LoadResult(float(rps), float(p50), float(p99), int(total), int(errors), "python")
