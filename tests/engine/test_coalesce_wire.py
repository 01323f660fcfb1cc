"""The coalescer's own RESP packing sends what redis-py would have sent."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection

from engine.coalesce import pack_evalsha

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("keys", "args"),
    [
        (["sk:{p3}:slots", "sk:{p3}:holds", "sk:{p3}:idem:1:7:key"], ["", "100", "7", "k-1"]),
        ([], []),
        (["k"], ["übergröße", "emoji \U0001f600", "a b", "", "\r\n"]),  # multi-byte UTF-8
        (["k"], [b"\x00\xff raw", 0, -3, 10**20, 2.5]),  # bytes, ints and floats
    ],
)
def test_packed_command_is_byte_identical_to_redis_py(keys: list[Any], args: list[Any]) -> None:
    expected = b"".join(Connection().pack_commands([("EVALSHA", SHA, len(keys), *keys, *args)]))
    assert pack_evalsha(SHA, keys, args) == expected


def test_values_redis_py_would_refuse_are_refused() -> None:
    with pytest.raises(TypeError):
        pack_evalsha(SHA, ["k"], [True])
    with pytest.raises(TypeError):
        pack_evalsha(SHA, ["k"], [None])
