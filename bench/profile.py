"""Profile one benchmark case: `python bench/profile.py hold-spread [--seconds 10]`.

Starts a deployment like bench/run.py, drives the case with wrk while py-spy
samples the API process, and prints the functions with the most samples (own
time and total time). Writes the collapsed stacks next to the output for
flame graphs (`--out`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import _cases  # noqa: E402
from bench.run import Bench  # noqa: E402


def summarize(collapsed: Path, top: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    out = [f"{samples} samples", "", "own time:"]
    out += [f"  {100 * n / samples:5.1f}%  {f}" for f, n in own.most_common(top)]
    out += ["", "total time:"]
    out += [f"  {100 * n / samples:5.1f}%  {f}" for f, n in total.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case", default="hold-spread", nargs="?")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("profile.collapsed"))
    args = parser.parse_args()
    run_args = argparse.Namespace(
        smoke=False, rounds=1, duration=args.seconds, connections=args.connections,
        slots=1000, catalog_slots=1000, generator="auto", output=None, cases=None,
    )  # fmt: skip
    redis_url = os.environ["SLOTKEEPER_BENCH_REDIS_URL"]
    server_dsn = os.environ["SLOTKEEPER_BENCH_DATABASE_URL"]
    work = Path(tempfile.mkdtemp(prefix="slotkeeper-profile-"))
    bench = Bench(run_args, redis_url, server_dsn, work)
    try:
        asyncio.run(bench.prepare())
        case = _cases(bench)[args.case]
        with bench.worker(), bench.api(1) as base:
            api_pid = subprocess.run(
                ["pgrep", "-f", f"serve --port {base.rsplit(':', 1)[1]}"],
                capture_output=True, text=True,
            ).stdout.split()[0]  # fmt: skip
            load = threading.Thread(target=bench.drive, args=(base, case))
            load.start()
            subprocess.run(
                [
                    shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                    "record", "-p", api_pid, "-d", str(int(args.seconds) - 1), "-r", "200",
                    "--format", "raw", "-o", str(args.out), "--nonblocking",
                ],
                check=True, capture_output=True,
            )  # fmt: skip
            load.join()
        print(summarize(args.out))
    finally:
        asyncio.run(bench.cleanup())
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
