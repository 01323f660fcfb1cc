"""Timestamps render exactly as datetime's ISO-8601 did before the cached path."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from api.http import iso_ms


def _reference(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def test_iso_ms_matches_datetime_on_edges_and_random_instants() -> None:
    rng = random.Random(12)
    edges = [
        0, 1, 999, 1000, 59_999, 86_399_999, 86_400_000,
        951_782_399_999, 951_868_800_000,  # 2000-02-29 and the day after
        2**31 * 1000, 4_102_444_799_999, 4_102_444_800_000,  # the cached range ends at 2100
        253_402_300_799_999,  # 9999-12-31, past the cached range
        -1, -86_400_001,  # before 1970
    ]  # fmt: skip
    now = 1_764_707_609_123
    around_now = [now + rng.randrange(-5_000, 5_000) for _ in range(20_000)]
    anywhen = [rng.randrange(0, 4_102_444_800_000) for _ in range(50_000)]
    for ms in edges + around_now + anywhen + around_now:  # twice: from the cache too
        assert iso_ms(ms) == _reference(ms), ms


def test_iso_ms_format_and_none() -> None:
    assert iso_ms(1_764_707_609_007) == "2025-12-02T20:33:29.007+00:00"
    assert iso_ms(0) == "1970-01-01T00:00:00.000+00:00"
    assert iso_ms(None) is None


def test_json_responses_carry_the_same_headers_as_starlettes_response() -> None:
    import orjson
    from starlette.responses import Response

    from api.http import json_response

    cases: list[tuple[object, int, dict[str, str] | None]] = [
        ({"a": 1}, 200, None),
        ([1, 2], 201, {"Location": "/holds/1-ab", "Idempotent-Replayed": "true"}),
        ({"x": "ü"}, 503, {"Retry-After": "1"}),
        ({}, 204, None),  # no content-length on 204
        ({"a": 1}, 200, {"Content-Type": "application/problem+json"}),
    ]
    for body, status, headers in cases:
        ours = json_response(body, status, headers)
        theirs = Response(orjson.dumps(body), status, headers, media_type="application/json")
        assert (ours.status_code, ours.body, ours.raw_headers) == (
            theirs.status_code,
            theirs.body,
            theirs.raw_headers,
        )
        assert ours.headers == theirs.headers and ours.background is None
