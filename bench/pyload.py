"""A keep-alive HTTP/1.1 load generator for machines without wrk (`python -m bench.pyload`).

Same scenarios as bench/wrk/*.lua; prints "req/s p50_ms p99_ms requests errors".
Slower than wrk, so its ratios are only indicative.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
import uuid
from urllib.parse import urlsplit


def _request(method: str, path: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


async def _connection(
    args: argparse.Namespace, deadline: float, lat: list[float], err: list[int]
) -> None:
    parts = urlsplit(args.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    token = os.environ["BENCH_TOKEN"]
    slots = int(os.environ.get("BENCH_SLOTS", "1"))
    prefix = os.environ.get("BENCH_PATH_PREFIX", "/slots/")
    base = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    pending: list[str] = []
    run = uuid.uuid4().hex[:8]
    n = 0
    while time.monotonic() < deadline:
        n += 1
        if args.script == "get.lua":
            req = _request("GET", args.path, parts.netloc, base, b"")
        elif args.script == "get_gzip.lua":
            gzip = {**base, "Accept-Encoding": "gzip"}
            req = _request("GET", args.path, parts.netloc, gzip, b"")
        elif args.script == "hold_batch.lua":
            items = ",".join(
                f'{{"slot_id":{random.randint(1, slots)},"idempotency_key":"{run}-{n}-{i}"}}'
                for i in range(int(os.environ.get("BENCH_BATCH", "100")))
            )
            body = f'{{"items":[{items}]}}'.encode()
            req = _request("POST", "/holds/batch", parts.netloc, base, body)
        elif args.script == "hold_confirm.lua" and pending:
            req = _request("POST", f"/holds/{pending.pop()}/confirm", parts.netloc, base, b"")
        else:
            headers = {**base, "Idempotency-Key": f"{run}-{n}"}
            path = f"{prefix}{random.randint(1, slots)}/hold"
            req = _request("POST", path, parts.netloc, headers, b'{"quantity":1}')
        started = time.perf_counter()
        writer.write(req)
        status, body = await _read_response(reader)
        lat.append(time.perf_counter() - started)
        if status >= 400:
            err.append(status)
        elif args.script == "hold_confirm.lua" and status == 201:
            pending.append(body.split(b'"hold_id":"', 1)[1].split(b'"', 1)[0].decode())
    writer.close()


async def _main(args: argparse.Namespace) -> None:
    lat: list[float] = []
    err: list[int] = []
    started = time.monotonic()
    deadline = started + args.duration
    await asyncio.gather(*(_connection(args, deadline, lat, err) for _ in range(args.connections)))
    elapsed = time.monotonic() - started
    lat.sort()

    def pick(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else 0.0

    print(f"{len(lat) / elapsed:.1f} {pick(0.5):.3f} {pick(0.99):.3f} {len(lat)} {len(err)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("--url", "--script", "--path"):
        parser.add_argument(name, required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    asyncio.run(_main(parser.parse_args()))
