"""Loads the Lua scripts once, from package data, so a wheel install finds them.

Each operation runs as a function of one Redis Functions library (FUNCTION LOAD,
FCALL; Redis >= 7, Valkey): the helpers of lua/lib*.lua are made once when the
library loads, not again on every call. Where the server has no Functions (Redis
< 7, fakeredis, an ACL without FUNCTION) and on Redis Cluster (see
docs/decisions.md), each operation is the helpers and the operation concatenated
and run with EVALSHA, as before. A server that lost the library (restarted
without persistence, a fresh failover target) answers "Function not found": the
library is loaded again and the call repeated, as redis-py does for NOSCRIPT.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from .settings import EngineSettings

__all__ = [
    "OPERATIONS",
    "Operation",
    "Scripts",
    "clock_arg",
    "housekeeping_args",
    "library_source",
    "missing_function",
    "script_source",
]

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


def _read(name: str) -> str:
    return resources.files("lua").joinpath(name).read_text(encoding="utf-8")


def script_source(name: str) -> str:
    """The helpers followed by the operation: what EVALSHA runs."""
    return "\n".join(_read(f) for f in (*LIBRARY, f"{name}.lua"))


def library_source(names: tuple[str, ...]) -> tuple[str, str]:
    """(library name, source) of the Functions library with one function per
    operation, named ``<library>_<operation>``. The name carries a digest of the
    source, so processes running different code never replace each other's
    library (function names are global to the server)."""
    body = ["local KEYS, ARGV", *(_read(f) for f in LIBRARY)]
    for name in names:
        # The operation's script becomes the body of a function; KEYS and ARGV
        # are the library's locals, set on each call.
        body += [f"local function op_{name}()", _read(f"{name}.lua"), "end"]
    digest = hashlib.sha1("\n".join(body).encode()).hexdigest()[:16]
    library = f"slotkeeper_{digest}"
    # Module state lib.lua keeps per call is reset on every call.
    body.append(
        "local function bind(op) return function(keys, args)"
        " KEYS, ARGV, last_entry_id = keys, args, ''; return op() end end"
    )
    body += [f"redis.register_function('{library}_{n}', bind(op_{n}))" for n in names]
    return library, "\n".join([f"#!lua name={library}", *body])


def missing_function(exc: BaseException) -> bool:
    """The server does not have the function (lost the library): load it again."""
    return isinstance(exc, ResponseError) and "function not found" in str(exc).lower()


def _unsupported(exc: BaseException) -> bool:
    """The server cannot run functions at all (no FCALL/FUNCTION, no permission)."""
    message = str(exc).lower()
    return isinstance(exc, ResponseError) and (
        "unknown command" in message or "noperm" in message or "no permissions" in message
    )


class Operation:
    """One operation, called like redis-py's AsyncScript: ``await op(keys=, args=,
    client=)``. FCALL of its function, or EVALSHA of its script (``script``)."""

    def __init__(self, owner: Scripts, name: str, script: AsyncScript) -> None:
        self.name = name
        self.script = script
        self.function = f"{owner.library}_{name}"
        self._owner = owner

    @property
    def sha(self) -> str:
        return str(self.script.sha)

    def command(self, keys: list[str], args: list[Any]) -> list[Any]:
        return self._owner.command(self, keys, args)

    def verb_target(self) -> tuple[str, str]:
        """('FCALL', function) or ('EVALSHA', sha): how the command starts."""
        return ("FCALL", self.function) if self._owner.functions else ("EVALSHA", self.sha)

    async def prepare(self, client: Any, *, reload: bool = False) -> None:
        if reload:
            await self._owner.load_library(client)
        else:
            await self._owner.prepare(client)

    async def __call__(
        self, keys: list[str] | tuple[str, ...] = (), args: Any = (), client: Any = None
    ) -> Any:
        return await self._owner.run(self, list(keys), list(args), client)


class Scripts:
    """Every operation of the engine, and how this server runs them."""

    def __init__(self, client: Any) -> None:
        self._client = client
        names = (*OPERATIONS, *GROUP_OPERATIONS)
        self.library, self.library_code = library_source(names)
        # None: not known yet (the first call finds out); False: EVALSHA only.
        self.functions: bool | None = False if isinstance(client, RedisCluster) else None
        self._by_name = {
            name: Operation(self, name, AsyncScript(client, script_source(name).encode()))
            for name in names
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

    def named(self, name: str) -> Operation:
        return self._by_name[name]

    def command(self, op: Operation, keys: list[str], args: list[Any]) -> list[Any]:
        """The command that runs ``op``: what the coalescer pipelines."""
        if self.functions:
            return ["FCALL", op.function, len(keys), *keys, *args]
        return ["EVALSHA", op.sha, len(keys), *keys, *args]

    async def prepare(self, client: Any) -> None:
        """Find out once whether the server runs functions, loading the library."""
        if self.functions is None:
            await self.load_library(client)

    async def load_library(self, client: Any) -> None:
        try:
            await client.function_load(self.library_code, replace=True)
        except ResponseError as exc:
            if not _unsupported(exc):
                raise
            self.functions = False
        else:
            self.functions = True

    async def run(self, op: Operation, keys: list[str], args: list[Any], client: Any) -> Any:
        client = self._client if client is None else client
        if isinstance(client, (Pipeline, ClusterPipeline)):
            # Queued, not sent (engine/replicated.py): a missing function surfaces
            # on execute, where the caller reloads and repeats.
            if self.functions:
                return client.execute_command(*self.command(op, keys, args))
            return await op.script(keys=keys, args=args, client=client)  # type: ignore[arg-type]
        await self.prepare(client)
        if self.functions:
            try:
                return await client.execute_command(*self.command(op, keys, args))
            except ResponseError as exc:
                if missing_function(exc):
                    await self.load_library(client)
                elif _unsupported(exc):  # e.g. failed over to an older server
                    self.functions = False
                else:
                    raise
            if self.functions:
                return await client.execute_command(*self.command(op, keys, args))
        return await op.script(keys=keys, args=args, client=client)

    async def load_all(self, client: Any) -> None:
        """Load the library, or SCRIPT LOAD every script (readiness); a restarted
        server is reloaded lazily."""
        if self.functions is not False:
            await self.load_library(client)
        if not self.functions:
            for op in self._by_name.values():
                await client.script_load(op.script.script)

    async def all_loaded(self, client: Any) -> bool:
        if self.functions:
            return bool(await client.function_list(library=self.library))
        found = await client.script_exists(*(op.sha for op in self._by_name.values()))
        return all(found)
