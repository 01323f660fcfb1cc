"""Loads the Lua scripts once, from package data, so a wheel install finds them."""

from __future__ import annotations

from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript

from .settings import EngineSettings

__all__ = ["OPERATIONS", "Scripts", "clock_arg", "housekeeping_args", "script_source"]

OPERATIONS = (
    "hold",
    "confirm",
    "cancel",
    "expire",
    "upsert_slot",
    "load_partition",
    "wait_join",
    "wait_leave",
    "extend",
    "hold_batch",
)
# Hold groups (engine/groups.py).
GROUP_OPERATIONS = ("group_part", "group_members", "group_home")


def clock_arg(now_ms: int | None) -> str:
    """ARGV[1] of every operation: an explicit clock in ms, or '' for Redis TIME."""
    return "" if now_ms is None else str(int(now_ms))


def housekeeping_args(settings: EngineSettings) -> list[str]:
    """ARGV[2..3] of every operation: the housekeeping batch and the retention of
    finished holds in ms (lua/lib.lua)."""
    return [str(settings.housekeeping_batch), str(settings.finished_retention_s * 1000)]


# The helpers prepended to every operation, in this order (each uses the ones before).
LIBRARY = ("lib.lua", "lib_waitlist.lua", "lib_housekeeping.lua")


def script_source(name: str) -> str:
    """The helpers followed by the operation: what Redis actually runs."""
    folder = resources.files("lua")
    parts = [folder.joinpath(f).read_text(encoding="utf-8") for f in (*LIBRARY, f"{name}.lua")]
    return "\n".join(parts)


class Scripts:
    """One AsyncScript per operation; EVALSHA, reloaded by redis-py on NOSCRIPT."""

    def __init__(self, client: Any) -> None:
        self._by_name = {
            name: AsyncScript(client, script_source(name).encode())
            for name in (*OPERATIONS, *GROUP_OPERATIONS)
        }
        self.hold = self._by_name["hold"]
        self.confirm = self._by_name["confirm"]
        self.cancel = self._by_name["cancel"]
        self.expire = self._by_name["expire"]
        self.upsert_slot = self._by_name["upsert_slot"]
        self.load_partition = self._by_name["load_partition"]
        self.wait_join = self._by_name["wait_join"]
        self.wait_leave = self._by_name["wait_leave"]
        self.extend = self._by_name["extend"]
        self.hold_batch = self._by_name["hold_batch"]

    @staticmethod
    def command(script: AsyncScript, keys: list[str], args: list[Any]) -> list[Any]:
        """The command that runs ``script``: what the coalescer pipelines."""
        return ["EVALSHA", script.sha, len(keys), *keys, *args]

    def named(self, name: str) -> Any:
        return self._by_name[name]

    async def load_all(self, client: Any) -> None:
        """SCRIPT LOAD every script up front (readiness); a restart reloads lazily."""
        for script in self._by_name.values():
            await client.script_load(script.script)

    async def all_loaded(self, client: Any) -> bool:
        shas = [s.sha for s in self._by_name.values()]
        found = await client.script_exists(*shas)
        return all(found)
