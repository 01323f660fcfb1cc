"""Configuration: every SLOTKEEPER_* variable, read once at start-up, typed."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from engine import EngineSettings

__all__ = ["WEAK_SECRETS", "ConfigError", "Settings"]

WEAK_SECRETS = {"", "secret", "changeme", "change-me", "password", "jwt-secret", "dev"}
_MIN_SECRET_BYTES = 32


class ConfigError(ValueError):
    """A SLOTKEEPER_* variable is missing or malformed; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    # Where the servers are; empty means "start embedded ones" (slotkeeper run).
    redis_url: str = ""
    redis_read_url: str = ""
    redis_cluster: bool = False
    # Redis Sentinel: "host:port,host:port"; the primary of the master named below
    # is asked of them (and again after a failover). api/sentinel.py.
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

    partitions: int = 16
    key_prefix: str = "sk:"
    hold_ttl_s: int = field(default=300, metadata={"env": "SLOTKEEPER_HOLD_TTL_SECONDS"})
    idempotency_ttl_s: int = field(
        default=86_400, metadata={"env": "SLOTKEEPER_IDEMPOTENCY_TTL_SECONDS"}
    )
    max_quantity: int = 100
    max_held_per_user_slot: int = 10
    hold_rate_per_minute: int = 600
    finished_retention_s: int = 86_400
    # A sync worker's unacknowledged entries are taken over by another after this long.
    sync_claim_idle_ms: int = 30_000

    availability_cache_ms: int = 500
    availability_page_limit: int = 1000
    backend_timeout_ms: int = 1000
    max_body_bytes: int = 16_384
    redis_max_connections: int = 64
    database_pool_size: int = 10
    log_level: str = "INFO"
    access_log: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build from SLOTKEEPER_* variables (``env`` defaults to os.environ)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata.get("env") or "SLOTKEEPER_" + f.name.upper()
            if name in env:
                values[f.name] = _parse(name, env[name], f.type)
        values.update(overrides)
        return cls(**values)

    def engine_settings(self) -> EngineSettings:
        return EngineSettings(
            partitions=self.partitions,
            key_prefix=self.key_prefix,
            hold_ttl_s=self.hold_ttl_s,
            idempotency_ttl_s=self.idempotency_ttl_s,
            max_quantity=self.max_quantity,
            max_held_per_user_slot=self.max_held_per_user_slot,
            finished_retention_s=self.finished_retention_s,
            min_replicas=self.redis_min_replicas,
            wait_timeout_ms=self.redis_wait_timeout_ms,
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
    def backend_timeout_s(self) -> float:
        return self.backend_timeout_ms / 1000


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
