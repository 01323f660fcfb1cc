"""compose.yaml, the Dockerfile and the README agree with the app's settings.

There is no Docker engine here, so the files are checked as data.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from api.app import create_app
from api.settings import Settings, env_name

ROOT = Path(__file__).resolve().parent.parent


def _env_names() -> set[str]:
    return {f.metadata.get("env") or env_name(f.name) for f in fields(Settings)}


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def test_compose_services_and_redis_durability() -> None:
    services = _compose()["services"]
    assert {"redis", "postgres", "api", "worker"} <= set(services)
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert redis_cmd[redis_cmd.index("--appendfsync") + 1] == "always"
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["worker"]["command"][-1] == "worker"
    for name in ("redis", "postgres", "api"):
        assert "healthcheck" in services[name], name


def test_compose_environment_names_real_settings() -> None:
    known = _env_names()
    services = _compose()["services"]
    for name in ("api", "worker", "migrate"):
        env = services[name]["environment"]
        assert "SLOTKEEPER_REDIS_URL" in env and "SLOTKEEPER_DATABASE_URL" in env
        assert "SLOTKEEPER_JWT_SECRET" in env
        unknown = {k for k in env if k.startswith("SLOTKEEPER_")} - known
        assert not unknown, f"{name} sets variables the app does not read: {unknown}"
        settings = Settings.from_env({k: str(v) for k, v in env.items() if "${" not in str(v)})
        assert settings.redis_url.startswith("redis://redis:")
        assert "@postgres:" in settings.database_url


def test_compose_healthchecks_hit_real_routes() -> None:
    paths = {getattr(r, "path", None) for r in create_app(Settings()).routes}
    api_check = " ".join(_compose()["services"]["api"]["healthcheck"]["test"])
    docker_check = (ROOT / "Dockerfile").read_text()
    for text in (api_check, docker_check):
        urls = re.findall(r"http://127\.0\.0\.1:8000(/[a-z]+)", text)
        assert urls and all(u in paths for u in urls), urls


def test_dockerfile_is_multi_stage_non_root_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK ", text, re.M)


def test_readme_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = sorted(name for name in _env_names() if f"`{name}`" not in readme)
    assert not missing, f"README does not list: {missing}"
