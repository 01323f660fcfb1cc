"""A local webhook receiver for the delivery tests: a tiny HTTP/1.1 server on a free
port that refuses the first ``refuse`` requests (503), then accepts (204), and
records every request it answered. Not a test module."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Delivery", "Receiver", "receiver", "verify"]


@dataclass
class Delivery:
    target: str  # the request's path and query
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed


@dataclass
class Receiver:
    refuse: int = 0
    delay_s: float = 0.0
    requests: list[Delivery] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/slotkeeper"

    @property
    def accepted(self) -> list[Delivery]:
        return [d for d in self.requests if d.status < 300]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                status = 503 if len(self.requests) < self.refuse else 204
                self.requests.append(Delivery(lines[0].split(" ")[1], headers, body, status))
                reason = b"Service Unavailable" if status == 503 else b"No Content"
                writer.write(b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\n\r\n" % (status, reason))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def receiver(*, refuse: int = 0, delay_s: float = 0.0) -> AsyncIterator[Receiver]:
    recv = Receiver(refuse=refuse, delay_s=delay_s)
    server = await asyncio.start_server(recv._handle, "127.0.0.1", 0)
    recv.port = server.sockets[0].getsockname()[1]
    try:
        yield recv
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


def verify(secret: str, delivery: Delivery) -> int:
    """How many of the ``webhook-signature`` entries ``secret`` verifies (Standard
    Webhooks: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">), computed here
    independently of the code under test."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = b"%s.%s.%s" % (
        delivery.headers["webhook-id"].encode(),
        delivery.headers["webhook-timestamp"].encode(),
        delivery.body,
    )
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    found = 0
    for part in delivery.headers["webhook-signature"].split(" "):
        version, _, signature = part.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            found += 1
    return found
