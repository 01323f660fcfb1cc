"""Server time of one hold script call: `python bench/script_cost.py [--calls N]`.

Starts its own idle private Redis (redis-server on PATH, else the embedded Valkey
the project installs), builds one partition of 1,000 open slots through the
engine, then sends the hold exactly as the engine does (the command Scripts.command
builds: the same keys and arguments), with random slot ids, user ids, hold ids and
idempotency keys so every call makes a new hold. The driver is redis-benchmark when
it is on PATH, else a pipelined redis-py loop. The result is Redis' own mean time
per call (INFO commandstats, usec_per_call of EVALSHA or FCALL): no network, no
client. The server is stopped by its PID afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from bench.run import stop  # noqa: E402
from engine import Engine, EngineSettings  # noqa: E402

__all__ = ["hold_script_us"]

SLOTS = 1000
# Slot ids 10^12 + k: redis-benchmark's __rand_int__ is 12 zero-padded digits, so
# "1" + __rand_int__ is a slot id as the engine writes it (no leading zero).
SLOT_BASE = 10**12
CAPACITY = 10**9
RAND = "__rand_int__"
ROUND = 2_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    from api.embedded import valkey_binary

    return valkey_binary()


def _raise_priority() -> None:
    """On a machine shared with other work, the server gets the CPU first when it
    needs it (allowed for root only; elsewhere it runs at normal priority)."""
    with contextlib.suppress(OSError):
        os.nice(-10)


@contextlib.contextmanager
def private_server() -> Iterator[tuple[int, int]]:
    """An idle Redis of our own on a free port; stopped by its PID on exit."""
    port = _free_port()
    folder = tempfile.mkdtemp(prefix="script-cost-")
    proc = subprocess.Popen(
        [
            _server_binary(),
            "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
            "--save", "", "--appendonly", "no", "--logfile", "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_raise_priority,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis server exited with {proc.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("redis server did not listen")
            time.sleep(0.05)
        yield port, proc.pid
    finally:
        stop(proc, 10)
        shutil.rmtree(folder, ignore_errors=True)


async def _prepare(url: str, functions: bool) -> tuple[list[Any], str]:
    """One partition of SLOTS open slots; the hold command with placeholders, and
    the INFO commandstats name of the command it runs."""
    client = aioredis.Redis.from_url(url)
    try:
        engine = Engine(client, EngineSettings(partitions=1, key_prefix="bench:"))
        if not functions:
            engine._scripts.functions = False  # as on servers without FUNCTION
        await engine.load_scripts()
        await engine.load_partition(0, [], [], epoch="bench")
        for k in range(SLOTS):
            await engine.create_slot(SLOT_BASE + k, CAPACITY)
        command = engine.hold_command(SLOT_BASE, "u", "k", hold_id=f"{SLOT_BASE}-{'0' * 16}")
    finally:
        await client.aclose()
    return command, command[0].lower()


def _placeholders(command: list[Any], round_no: int) -> list[str]:
    """The engine's command with every per-request value made random per call.
    (redis-benchmark seeds its random numbers with the time: rounds started in
    the same second would repeat each other, hence the round in the ids.)"""
    slot, key = str(SLOT_BASE), f"{SLOT_BASE}:u:k"
    out = []
    for part in command:
        value = str(part)
        # The idempotency record key: random slot, user and key.
        user, idem = f"u{round_no}x{RAND}", f"k{round_no}x{RAND}{RAND}{RAND}"
        value = value.replace(key, f"1{RAND}:{user}:{idem}")
        if value == slot:
            value = f"1{RAND}"
        elif value == "u":
            value = user
        elif value == "k":
            value = idem
        elif value == f"{SLOT_BASE}-{'0' * 16}":
            value = f"1{RAND}-{round_no}x{RAND}{RAND}"
        out.append(value)
    return out


def _randomised(template: list[str], rng: random.Random) -> list[str]:
    def fill(value: str) -> str:
        while RAND in value:
            value = value.replace(RAND, f"{rng.randrange(SLOTS):012d}", 1)
        return value

    return [fill(v) for v in template]


def _drive_benchmark(port: int, template: list[str], calls: int) -> None:
    subprocess.run(
        [
            "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", str(calls),
            "-c", "4", "-P", "16", "-r", str(SLOTS), "-q", *template,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


def _drive_pipelined(port: int, template: list[str], calls: int) -> None:
    rng = random.Random(12)
    client: Any = redis.Redis(port=port)
    try:
        sent = 0
        while sent < calls:
            pipe = client.pipeline(transaction=False)
            for _ in range(min(100, calls - sent)):
                pipe.execute_command(*_randomised(template, rng))
            pipe.execute()
            sent += 100
    finally:
        client.close()


def _cpu_s(pid: int) -> float:
    """CPU time (user + system) the process has used, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hold_script_us(*, calls: int = 100_000, functions: bool = True) -> float:
    return measure(calls=calls, functions=functions)[0]


def measure(*, calls: int = 100_000, functions: bool = True) -> tuple[float, float, float]:
    """(hold_script_us, the server's CPU time per call in us, Redis commands the
    script ran per call). The CPU time, from /proc, includes what the server
    spends around the script (reading the command, the reply); the command count
    does not depend on the machine at all."""
    """Mean Redis server time of one new hold, in microseconds.

    The calls go in rounds of ROUND; the result is the lowest of the rounds'
    means: on a shared machine other processes only ever add time (the server
    descheduled in the middle of a call), and a round of 2,000 calls that none of
    them disturbed is what an idle server does. ``functions=False`` measures the EVALSHA
    fallback (servers without Redis Functions)."""
    with private_server() as (port, pid):
        url = f"redis://127.0.0.1:{port}/0"
        command, stat = asyncio.run(_prepare(url, functions))
        client: Any = redis.Redis(port=port)
        try:
            means = []
            cpu_before = _cpu_s(pid)
            for start in range(0, calls, ROUND):
                client.config_resetstat()
                n = min(ROUND, calls - start)
                template = _placeholders(command, start // ROUND)
                if shutil.which("redis-benchmark"):
                    _drive_benchmark(port, template, n)
                else:
                    _drive_pipelined(port, template, n)
                all_stats = client.info("commandstats")
                stats = all_stats[f"cmdstat_{stat}"]
                if stats.get("failed_calls", 0) or stats["calls"] != n:
                    raise RuntimeError(f"hold calls failed: {stats}")
                means.append(float(stats["usec_per_call"]))
                inner = sum(
                    v["calls"]
                    for k, v in all_stats.items()
                    if k != f"cmdstat_{stat}"
                    and not k.startswith(("cmdstat_config", "cmdstat_info"))
                )
            holds = client.hlen(command[command.index("bench:{p0}:holds")])
            if holds < calls * 0.99:
                raise RuntimeError(f"only {holds} holds made of {calls} calls")
            cpu_us = (_cpu_s(pid) - cpu_before) * 1e6 / calls
            return min(means), cpu_us, inner / n
        finally:
            client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--evalsha", action="store_true", help="the fallback without Functions")
    args = parser.parse_args()
    us, cpu_us, inner = measure(calls=args.calls, functions=not args.evalsha)
    how = "EVALSHA" if args.evalsha else "FCALL"
    print(
        f"hold script ({how}): {us:.1f} us per call (mean server time, {args.calls} calls;"
        f" server CPU {cpu_us:.1f} us per call; {inner:.2f} commands per call)"
    )


if __name__ == "__main__":
    main()
