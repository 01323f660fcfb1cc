"""The cost of the durable confirm and of WAIT, side by side (docs/perf.md).

    python bench/durability.py                  # hold-spread and hold-confirm, this code
    python bench/durability.py --code DIR       # the same cases on another checkout's code
    python bench/durability.py --wait           # hold-spread on a private primary with one
                                                # local replica: MIN_REPLICAS 0 against 1

The full `make bench` (bench/run.py) takes many minutes; this drives only the cases
the durability work changes, with bench/run.py's own harness. Servers: as for
bench/run.py (SLOTKEEPER_BENCH_REDIS_URL / SLOTKEEPER_BENCH_DATABASE_URL, else
embedded ones); --wait starts its own primary and replica on free ports and stops
them by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _load_harness(code: Path | None) -> Any:
    """bench/run.py of ``code`` (default: this checkout); the API it starts runs that code."""
    root = code or ROOT
    sys.path.insert(0, str(root))
    if code is not None:
        os.environ["PYTHONPATH"] = str(root)  # the serve and worker processes too
    import bench.run as harness

    return harness


def _redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    from api.embedded import valkey_binary

    return valkey_binary()


@contextlib.contextmanager
def _primary_and_replica(harness: Any, work: Path) -> Iterator[str]:
    procs: list[subprocess.Popen[bytes]] = []
    primary = harness.free_port()
    try:
        for name, extra in (
            ("primary", []),
            ("replica", ["--replicaof", "127.0.0.1", str(primary)]),
        ):
            folder = work / name
            folder.mkdir(parents=True, exist_ok=True)
            port = primary if name == "primary" else harness.free_port()
            procs.append(
                subprocess.Popen(
                    [_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(folder),
                     *extra],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        time.sleep(1.5)  # the replica connects and syncs an empty data set
        yield f"redis://127.0.0.1:{primary}/0"
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def _drive(
    harness: Any, bench: Any, names: list[str], rounds: int, env: dict[str, dict[str, str]]
) -> dict[str, Any]:
    n = bench.args.slots
    cases = {
        "hold-spread": harness.Case("hold-spread", "api1", "hold.lua", "/slots/1/hold", slots=n),
        "hold-confirm": harness.Case(
            "hold-confirm", "api1", "hold_confirm.lua", "/slots/1/hold", slots=n
        ),
    }
    out = {}
    for label in names:
        case_name = label.split(" ")[0]
        out[label] = harness.Case(
            label, "api1", cases[case_name].script, cases[case_name].path, slots=n
        )
    base_env = dict(bench.env)
    for round_no in range(rounds):
        print(f"round {round_no + 1}/{rounds}", flush=True)
        for label in names:
            bench.env = {**base_env, **env.get(label, {})}
            with bench.worker(), bench.api(1) as base:
                out[label].results.append(bench.drive(base, out[label]))
    bench.env = base_env
    return out


def _row(case: Any) -> str:
    errors = sum(r.errors for r in case.results)
    return (
        f"| {case.name} | {case.median('requests_per_s'):,.0f} | {case.median('p50_ms'):.2f}"
        f" | {case.median('p99_ms'):.2f} | {errors} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--code", type=Path, default=None, help="a checkout whose code to run")
    parser.add_argument("--wait", action="store_true", help="the WAIT case (private servers)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--slots", type=int, default=1000)
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    args = parser.parse_args()
    harness = _load_harness(args.code)
    ns = argparse.Namespace(**vars(args), smoke=False, catalog_slots=args.slots, output=None)
    redis_url = os.environ.get("SLOTKEEPER_BENCH_REDIS_URL", "")
    server_dsn = os.environ.get("SLOTKEEPER_BENCH_DATABASE_URL", "")
    work = Path(tempfile.mkdtemp(prefix="slotkeeper-bench-durability-"))
    servers = harness.EmbeddedServers(work / "servers")
    try:
        with (
            servers.running(redis=not redis_url and not args.wait, postgres=not server_dsn),
            contextlib.ExitStack() as stack,
        ):
            if args.wait:
                redis_url = stack.enter_context(_primary_and_replica(harness, work))
            bench = harness.Bench(
                ns, redis_url or servers.redis_url, server_dsn or servers.database_url, work
            )
            try:
                asyncio.run(bench.prepare())
                if args.wait:
                    names = ["hold-spread (no WAIT)", "hold-spread (WAIT 1 replica)"]
                    env = {"hold-spread (WAIT 1 replica)": {"SLOTKEEPER_REDIS_MIN_REPLICAS": "1"}}
                else:
                    names, env = ["hold-spread", "hold-confirm"], {}
                cases = _drive(harness, bench, names, args.rounds, env)
            finally:
                with contextlib.suppress(Exception):
                    asyncio.run(bench.cleanup())
            if any(r.errors for case in cases.values() for r in case.results):
                for log in sorted(work.glob("*.log")):  # what the errors were
                    lines = log.read_text(errors="replace").splitlines()
                    print(f"--- {log.name} (last lines)", *lines[-15:], sep="\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\ncode: {args.code or ROOT}; {args.connections} connections,"
        f" {args.duration:g} s x {args.rounds} rounds"
    )
    print("| case | req/s | p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|")
    for case in cases.values():
        print(_row(case))


if __name__ == "__main__":
    main()
