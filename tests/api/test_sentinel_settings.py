"""SLOTKEEPER_REDIS_SENTINELS and friends: parsed, refused when malformed, and handed
to the arq worker's own connection (the failover itself: tests/drills/test_sentinel.py)."""

from __future__ import annotations

import pytest

from api.settings import ConfigError, Settings
from sync.worker import arq_redis_settings


def test_sentinel_variables_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "SLOTKEEPER_REDIS_URL": "redis://:pw@ignored:1/3",
            "SLOTKEEPER_REDIS_SENTINELS": "10.0.0.1:26379, sentinel-b:26380",
            "SLOTKEEPER_REDIS_SENTINEL_MASTER": "slots",
            "SLOTKEEPER_REDIS_MIN_REPLICAS": "1",
            "SLOTKEEPER_REDIS_WAIT_TIMEOUT_MS": "250",
        }
    )
    assert settings.sentinel_addresses == (("10.0.0.1", 26379), ("sentinel-b", 26380))
    assert settings.sync_settings().redis_sentinels == settings.sentinel_addresses
    engine = settings.engine_settings()
    assert (engine.min_replicas, engine.wait_timeout_ms) == (1, 250)
    arq = arq_redis_settings(settings.sync_settings())
    assert arq.sentinel and arq.sentinel_master == "slots"
    assert arq.host == [("10.0.0.1", 26379), ("sentinel-b", 26380)]
    assert (arq.database, arq.password) == (3, "pw")


@pytest.mark.parametrize("value", [",", "host", "host:", ":26379", "host:port", "h:70000"])
def test_malformed_sentinels_name_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="SLOTKEEPER_REDIS_SENTINELS"):
        Settings.from_env({"SLOTKEEPER_REDIS_SENTINELS": value})


def test_without_sentinels_the_worker_uses_the_url() -> None:
    arq = arq_redis_settings(Settings(redis_url="redis://127.0.0.1:6390/2").sync_settings())
    assert (arq.host, arq.port, arq.database, arq.sentinel) == ("127.0.0.1", 6390, 2, False)


def test_negative_min_replicas_is_refused() -> None:
    with pytest.raises(ConfigError, match="SLOTKEEPER_REDIS_MIN_REPLICAS"):
        Settings(redis_min_replicas=-1)
