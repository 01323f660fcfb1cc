"""Configuration: every SLOTKEEPER_* variable, read once at start-up, typed, checked.

One flat set of variables composes the tree the layers take: ``engine_settings()``
(engine/settings.py) and ``sync_settings()`` (sync/settings.py); the API keeps the
rest. Names: ``SLOTKEEPER_`` + the field in capitals, a field's ``_s`` spelled
``_SECONDS`` (``hold_ttl_s`` -> ``SLOTKEEPER_HOLD_TTL_SECONDS``); ``_ms`` stays
``_MS``. The ``_S`` spellings of earlier releases are still read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from engine import EngineSettings
from engine.sentinel import parse_sentinels
from sync.settings import SyncSettings
from sync.webhooks import WebhookSettings

__all__ = ["WEAK_SECRETS", "ConfigError", "Settings", "env_name"]

WEAK_SECRETS = {"", "secret", "changeme", "change-me", "password", "jwt-secret", "dev"}
_MIN_SECRET_BYTES = 32


class ConfigError(ValueError):
    """A SLOTKEEPER_* variable is missing or malformed; the message names it."""


# The layers' defaults are the deployment's defaults (not copied here).
_ENGINE = EngineSettings()
_SYNC = SyncSettings()
_NO_LIMIT = 2**31 - 1
# Inclusive ranges of the numbers; every int field has one.
_RANGES: dict[str, tuple[int, int]] = {
    "port": (1, 65_535),
    "redis_min_replicas": (0, 100),
    "redis_wait_timeout_ms": (1, 600_000),
    "access_token_ttl_s": (1, 366 * 86_400),
    "refresh_window_s": (0, 366 * 86_400),
    "login_max_failures_per_account": (1, _NO_LIMIT),
    "login_max_failures_per_address": (1, _NO_LIMIT),
    "login_failure_window_s": (1, 86_400),
    "login_timeout_ms": (1, 600_000),
    "password_hash_concurrency": (0, 1024),  # 0: the number of cores
    "partitions": (1, 16_384),
    "hold_ttl_s": (1, 30 * 86_400),
    "idempotency_ttl_s": (1, 366 * 86_400),
    "max_quantity": (1, 1_000_000_000),
    "max_held_per_user_slot": (1, 1_000_000_000),
    "hold_max_extensions": (0, 1_000),
    "hold_max_lifetime_s": (1, 366 * 86_400),
    "max_batch": (1, 10_000),
    "hold_rate_per_minute": (0, _NO_LIMIT),  # 0: off
    "finished_retention_s": (1, 366 * 86_400),
    "waitlist_ttl_s": (1, 366 * 86_400),
    "waitlist_offer_ttl_s": (1, 30 * 86_400),
    "max_waiting_per_user_slot": (1, 1_000_000),
    "max_group_items": (1, 100),
    "group_pending_ms": (100, 600_000),
    "sync_claim_idle_ms": (1, 86_400_000),
    "sync_database_timeout_ms": (1, 3_600_000),
    "webhook_timeout_ms": (1, 600_000),
    "webhook_backoff_ms": (1, 3_600_000),
    "webhook_retry_for_s": (1, 30 * 86_400),
    "slot_archive_after_s": (0, 3660 * 86_400),
    "availability_cache_ms": (0, 86_400_000),
    "availability_page_limit": (1, 100_000),
    "backend_timeout_ms": (1, 600_000),
    "max_body_bytes": (1, 64 * 1024 * 1024),
    "redis_max_connections": (1, 1_000_000),
    "database_pool_size": (1, 10_000),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "jwt_algorithm": ("HS256", "HS384", "HS512"),
    "log_level": ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
}


def env_name(field_name: str) -> str:
    """The variable that sets ``field_name``."""
    name = field_name.upper()
    if name.endswith("_S"):
        name = name.removesuffix("_S") + "_SECONDS"
    return "SLOTKEEPER_" + name


def _env_names(field_name: str) -> tuple[str, ...]:
    """The variable, then the spelling earlier releases read (``..._S``)."""
    name = env_name(field_name)
    legacy = "SLOTKEEPER_" + field_name.upper()
    return (name,) if legacy == name else (name, legacy)


@dataclass(frozen=True, slots=True)
class Settings:
    # Where the servers are; empty means "start embedded ones" (slotkeeper run).
    redis_url: str = ""
    redis_read_url: str = ""
    redis_cluster: bool = False
    # Redis Sentinel: "host:port,host:port"; the primary of the master named below
    # is asked of them (and again after a failover). engine/sentinel.py.
    redis_sentinels: str = ""
    redis_sentinel_master: str = "mymaster"
    # Holds, confirms and cancels answer only once WAIT saw this many replicas
    # have the write (0: do not wait), within this timeout (else 503).
    redis_min_replicas: int = 0
    redis_wait_timeout_ms: int = 1000
    database_url: str = ""
    data_dir: Path = Path(".slotkeeper")
    host: str = "127.0.0.1"
    port: int = 8000
    dev_mode: bool = False
    # Run the sync worker's duties inside each API process (small deployments).
    with_worker: bool = False

    jwt_secret: str = ""
    jwt_algorithm: str = "HS256"
    access_token_ttl_s: int = 3600
    refresh_window_s: int = 14 * 86_400
    login_max_failures_per_account: int = 5
    login_max_failures_per_address: int = 20
    login_failure_window_s: int = 300
    # Login's own budget (hash queue included), apart from backend_timeout_ms.
    login_timeout_ms: int = 5000
    # Password hashes run at once per process; 0 = the number of cores.
    password_hash_concurrency: int = 0

    partitions: int = _ENGINE.partitions
    key_prefix: str = _ENGINE.key_prefix
    hold_ttl_s: int = _ENGINE.hold_ttl_s
    idempotency_ttl_s: int = _ENGINE.idempotency_ttl_s
    max_quantity: int = _ENGINE.max_quantity
    max_held_per_user_slot: int = _ENGINE.max_held_per_user_slot
    hold_max_extensions: int = _ENGINE.hold_max_extensions
    hold_max_lifetime_s: int = _ENGINE.hold_max_lifetime_s
    # Items of one POST /holds/batch, at most.
    max_batch: int = 100
    hold_rate_per_minute: int = 600
    finished_retention_s: int = _ENGINE.finished_retention_s
    waitlist_ttl_s: int = _ENGINE.waitlist_ttl_s
    waitlist_offer_ttl_s: int = _ENGINE.waitlist_offer_ttl_s
    max_waiting_per_user_slot: int = _ENGINE.max_waiting_per_user_slot
    max_group_items: int = _ENGINE.max_group_items
    group_pending_ms: int = _ENGINE.group_pending_ms
    # A sync worker's unacknowledged entries are taken over by another after this long.
    sync_claim_idle_ms: int = _SYNC.claim_idle_ms
    # Webhook delivery (sync/webhooks.py): per-attempt timeout, first retry delay
    # (doubling), and how long to retry before the endpoint is disabled.
    webhook_timeout_ms: int = 10_000
    webhook_backoff_ms: int = 1_000
    webhook_retry_for_s: int = 86_400
    # A slot whose ends_at is past by this long leaves Redis with its holds.
    slot_archive_after_s: int = _SYNC.slot_archive_after_s

    availability_cache_ms: int = 500
    availability_page_limit: int = 1000
    backend_timeout_ms: int = 1000
    max_body_bytes: int = 16_384
    redis_max_connections: int = _SYNC.redis_max_connections
    database_pool_size: int = _SYNC.database_pool_size
    # SQL statements of the worker and the CLI (restore, reconcile) give up after this.
    sync_database_timeout_ms: int = int(_SYNC.database_timeout_s * 1000)
    log_level: str = "INFO"
    access_log: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build from SLOTKEEPER_* variables (``env`` defaults to os.environ)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            for name in (f.metadata.get("env"), *_env_names(f.name)):
                if name is not None and name in env:
                    values[f.name] = _parse(name, env[name], f.type)
                    break
        values.update(overrides)
        return cls(**values)

    def __post_init__(self) -> None:
        """Every value in range, so a bad one stops start-up naming its variable."""
        for name, (low, high) in _RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(f"{env_name(name)}={value} is out of range {low}..{high}")
        for name, choices in _CHOICES.items():
            if getattr(self, name).upper() not in choices:
                raise ConfigError(f"{env_name(name)} must be one of {', '.join(choices)}")
        self.sentinel_addresses  # noqa: B018 -- malformed: ConfigError naming the variable
        if any(c in self.key_prefix for c in "{}"):
            # A brace in the prefix would become the cluster hash tag.
            raise ConfigError(f"{env_name('key_prefix')} must not contain braces")

    def engine_settings(self) -> EngineSettings:
        return EngineSettings(
            partitions=self.partitions,
            key_prefix=self.key_prefix,
            hold_ttl_s=self.hold_ttl_s,
            idempotency_ttl_s=self.idempotency_ttl_s,
            max_quantity=self.max_quantity,
            max_held_per_user_slot=self.max_held_per_user_slot,
            hold_max_extensions=self.hold_max_extensions,
            hold_max_lifetime_s=self.hold_max_lifetime_s,
            finished_retention_s=self.finished_retention_s,
            min_replicas=self.redis_min_replicas,
            wait_timeout_ms=self.redis_wait_timeout_ms,
            waitlist_ttl_s=self.waitlist_ttl_s,
            waitlist_offer_ttl_s=self.waitlist_offer_ttl_s,
            max_waiting_per_user_slot=self.max_waiting_per_user_slot,
            max_group_items=self.max_group_items,
            group_pending_ms=self.group_pending_ms,
        )

    def sync_settings(self) -> SyncSettings:
        return SyncSettings(
            redis_url=self.redis_url,
            database_url=self.database_url,
            engine=self.engine_settings(),
            redis_cluster=self.redis_cluster,
            redis_sentinels=self.sentinel_addresses,
            redis_sentinel_master=self.redis_sentinel_master,
            redis_max_connections=self.redis_max_connections,
            database_pool_size=self.database_pool_size,
            redis_timeout_s=self.backend_timeout_s,
            database_timeout_s=self.sync_database_timeout_ms / 1000,
            claim_idle_ms=self.sync_claim_idle_ms,
            webhooks=self.webhook_settings(),
            slot_archive_after_s=self.slot_archive_after_s,
        )

    def webhook_settings(self) -> WebhookSettings:
        return WebhookSettings(
            timeout_s=self.webhook_timeout_ms / 1000,
            retry_for_s=self.webhook_retry_for_s,
            backoff_s=self.webhook_backoff_ms / 1000,
        )

    def check_secret(self) -> None:
        """Outside dev mode the server refuses to start with a missing or weak secret."""
        if self.dev_mode:
            return
        secret = self.jwt_secret
        if secret.lower() in WEAK_SECRETS or len(secret.encode()) < _MIN_SECRET_BYTES:
            raise ConfigError(
                "SLOTKEEPER_JWT_SECRET is missing or weak: set at least "
                f"{_MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -hex 32`)"
            )

    @property
    def sentinel_addresses(self) -> tuple[tuple[str, int], ...]:
        """SLOTKEEPER_REDIS_SENTINELS as (host, port) pairs (checked at start-up)."""
        if not self.redis_sentinels:
            return ()
        try:
            return parse_sentinels(self.redis_sentinels)
        except ValueError as exc:
            raise ConfigError(f"SLOTKEEPER_REDIS_SENTINELS={exc}") from None

    @property
    def backend_timeout_s(self) -> float:
        return self.backend_timeout_ms / 1000

    @property
    def login_timeout_s(self) -> float:
        return self.login_timeout_ms / 1000


def _parse(name: str, raw: str, kind: Any) -> Any:
    kind = str(kind)
    try:
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "Path":
            return Path(raw)
        return raw
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind}") from None
