"""Settings: every variable checked at start-up, a bad one named, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.settings import ConfigError, Settings, env_name

SLOTKEEPER = str(Path(sys.executable).with_name("slotkeeper"))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SLOTKEEPER_PARTITIONS", "0"),
        ("SLOTKEEPER_PORT", "70000"),
        ("SLOTKEEPER_DATABASE_POOL_SIZE", "0"),
        ("SLOTKEEPER_REDIS_MAX_CONNECTIONS", "-1"),
        ("SLOTKEEPER_HOLD_TTL_SECONDS", "0"),
        ("SLOTKEEPER_BACKEND_TIMEOUT_MS", "0"),
        ("SLOTKEEPER_LOG_LEVEL", "LOUD"),
        ("SLOTKEEPER_KEY_PREFIX", "{x}:"),
        ("SLOTKEEPER_MAX_QUANTITY", "many"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_durations_are_spelled_seconds_and_the_old_names_still_work() -> None:
    assert env_name("hold_ttl_s") == "SLOTKEEPER_HOLD_TTL_SECONDS"
    assert env_name("access_token_ttl_s") == "SLOTKEEPER_ACCESS_TOKEN_TTL_SECONDS"
    assert env_name("backend_timeout_ms") == "SLOTKEEPER_BACKEND_TIMEOUT_MS"
    assert Settings.from_env({"SLOTKEEPER_ACCESS_TOKEN_TTL_SECONDS": "60"}).access_token_ttl_s == 60
    assert Settings.from_env({"SLOTKEEPER_ACCESS_TOKEN_TTL_S": "61"}).access_token_ttl_s == 61


def test_the_engine_and_sync_settings_are_composed_from_the_same_values() -> None:
    settings = Settings.from_env(
        {"SLOTKEEPER_PARTITIONS": "4", "SLOTKEEPER_SYNC_DATABASE_TIMEOUT_MS": "2500"}
    )
    sync = settings.sync_settings()
    assert sync.engine == settings.engine_settings()
    assert (sync.engine.partitions, sync.database_timeout_s) == (4, 2.5)


@pytest.mark.parametrize("command", ["serve", "run", "worker"])
def test_a_bad_value_stops_the_command_before_it_starts(command: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLOTKEEPER_")}
    env.update(
        SLOTKEEPER_REDIS_URL="redis://127.0.0.1:1/0",
        SLOTKEEPER_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
        SLOTKEEPER_DATA_DIR=str(tmp_path),
        SLOTKEEPER_PARTITIONS="0",
        NO_COLOR="1",
        COLUMNS="200",
    )
    done = subprocess.run(
        [SLOTKEEPER, command], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "SLOTKEEPER_PARTITIONS" in done.stderr
    assert "started" not in done.stdout + done.stderr
    assert not any(tmp_path.iterdir())  # nothing was started (no embedded servers either)
