"""bench/script_cost.py runs, and a new hold costs the Redis commands docs/perf.md says."""

from __future__ import annotations

from bench import script_cost


def test_a_new_hold_runs_ten_redis_commands_with_functions_and_without() -> None:
    for functions in (True, False):
        us, cpu_us, commands = script_cost.measure(calls=2000, functions=functions)
        assert us > 0 and cpu_us > 0
        # HMGET, TIME, GET, HEXISTS, HINCRBY, HSET, RPUSH, SET, HSET, XADD: nothing due,
        # so no queue is looked at (lua/lib.lua, "The due mark").
        assert commands == 10, (functions, commands)
