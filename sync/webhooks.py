"""Webhook delivery: the worker's loop over the outbox, signed as Standard Webhooks says.

Each due delivery is POSTed with ``webhook-id`` (the event id, the same on every
retry), ``webhook-timestamp`` (Unix seconds of this attempt) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``,
one per valid secret, space-separated). A 2xx is success; anything else is retried
with exponential backoff until ``retry_for_s`` has passed since the first try, then
the endpoint is disabled with the reason. The loop runs beside the drain and never
blocks it: its own task, its own HTTP client, short PostgreSQL statements.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from . import outbox
from .feed import FeedEvent

__all__ = ["WebhookDispatcher", "WebhookSettings", "sign", "signature_header"]

log = logging.getLogger("slotkeeper.webhooks")

_MAX_BACKOFF_S = 3600.0
_IDLE_SLEEP_S = 0.2
_ERROR_SLEEP_S = 1.0


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    timeout_s: float = 10.0
    retry_for_s: float = 86_400.0
    backoff_s: float = 1.0  # the first retry's delay; doubles per attempt up to an hour
    concurrency: int = 16  # attempts in flight per worker


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<signature>`` for ``secret`` (``whsec_<base64>``)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def signature_header(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets)


def _payload(delivery: dict[str, Any]) -> tuple[str, bytes]:
    data = delivery["data"]
    event = FeedEvent(
        feed_id=int(delivery["feed_id"]),
        type=delivery["type"],
        slot_id=delivery["slot_id"],
        occurred_at=delivery["occurred_at"],
        data=orjson.loads(data) if isinstance(data, str | bytes) else data,
    )
    body = event.body()
    return f"evt_{body['id']}", orjson.dumps(body)


class WebhookDispatcher:
    def __init__(
        self, pool: Any, settings: WebhookSettings | None = None, *, batch: int = 64
    ) -> None:
        self.pool = pool
        self.settings = settings or WebhookSettings()
        self.batch = batch
        self.delivered_total = 0
        self._client: httpx.AsyncClient | None = None

    @property
    def _lease_s(self) -> float:
        # Longer than an attempt can take, so a live worker's delivery is never
        # handed to another one; a dead worker's comes back after it.
        return 2 * self.settings.timeout_s + 1

    def _backoff_s(self, attempts: int) -> float:
        delay = min(self.settings.backoff_s * 2.0 ** max(attempts - 1, 0), _MAX_BACKOFF_S)
        return float(delay * random.uniform(0.9, 1.1))

    async def _claim(self, limit: int) -> list[asyncio.Task[None]]:
        due = await outbox.claim_due(self.pool, limit=limit, lease_s=self._lease_s)
        if due and self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.settings.timeout_s, follow_redirects=False
            )
        return [asyncio.create_task(self._attempt(d)) for d in due]

    async def _attempt(self, delivery: dict[str, Any]) -> None:
        try:
            await self._deliver(delivery)
        except Exception as exc:  # recording failed (PostgreSQL away): the lease runs out
            log.warning(
                "webhook delivery %s: %s: %s", delivery["delivery_id"], type(exc).__name__, exc
            )

    async def _deliver(self, delivery: dict[str, Any]) -> None:
        assert self._client is not None
        msg_id, body = _payload(delivery)
        timestamp = int(time.time())
        secrets = [delivery["secret"]]
        if delivery["previous_secret"]:
            secrets.append(delivery["previous_secret"])
        headers = {
            "content-type": "application/json",
            "user-agent": "slotkeeper-webhooks",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
        }
        status: int | None = None
        try:
            response = await self._client.post(delivery["url"], content=body, headers=headers)
            status = response.status_code
            if 200 <= status < 300:
                await outbox.record_success(self.pool, delivery["delivery_id"], status)
                self.delivered_total += 1
                return
            error = f"HTTP {status}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
        attempts = int(delivery["attempts"]) + 1
        now = datetime.now(UTC)
        retry_at: datetime | None = now + timedelta(seconds=self._backoff_s(attempts))
        failing_for = now - delivery["retry_from"]
        if attempts > 1 and failing_for >= timedelta(seconds=self.settings.retry_for_s):
            retry_at = None
            log.warning("webhook %s disabled: %s", delivery["webhook_id"], error)
        await outbox.record_failure(
            self.pool, delivery, status=status, error=error, retry_at=retry_at
        )

    async def run(self) -> None:
        """Deliver forever (the worker's task). Up to ``concurrency`` attempts are in
        flight; a slow endpoint occupies its own attempts, not the others' turns."""
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    free = self.settings.concurrency - len(in_flight)
                    if free > 0:
                        in_flight.update(await self._claim(min(free, self.batch)))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # PostgreSQL away: wait it out
                    log.warning("webhook queue unavailable: %s: %s", type(exc).__name__, exc)
                    await asyncio.sleep(_ERROR_SLEEP_S)
                    continue
                if in_flight:
                    _, in_flight = await asyncio.wait(
                        in_flight, timeout=_IDLE_SLEEP_S, return_when=asyncio.FIRST_COMPLETED
                    )
                else:
                    await asyncio.sleep(_IDLE_SLEEP_S)
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
