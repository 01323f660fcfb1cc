"""Malformed input never gives a 500: paths, bodies, media types, sizes, unknown routes.

Every answer here is checked by ``assert_problem``: RFC 9457 media type and members,
no stack trace, no SQL, no Redis key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from .conftest import Harness, Shared
from .support import PASSWORD, User, assert_problem, held, new_slot, new_user


@pytest.fixture(scope="module")
async def admin(h: Harness) -> User:
    return await new_user(h, admin=True)


@pytest.fixture(scope="module")
async def slot_id(h: Harness, admin: User) -> int:
    return await new_slot(h, admin, capacity=1000)


BAD_SLOT_IDS = [
    "abc",
    "-1",
    "0",
    "00",
    "1" * 40,
    "9223372036854775808",
    "99999999999999999999",
    "1.5",
    "1e3",
    "0x10",
    "+5",
    " 5",
    "%20",
    "%00",
    "\u0663",  # ARABIC-INDIC DIGIT THREE: str.isdigit() says yes
    "\u00b2",  # SUPERSCRIPT TWO
    "null",
    "1;DROP TABLE slots",
]


def _slot_routes(raw: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("GET", f"/slots/{raw}", None),
        ("PATCH", f"/slots/{raw}", {"capacity": 1}),
        ("POST", f"/slots/{raw}/hold", {"quantity": 1}),
    ]


@pytest.mark.parametrize("raw", BAD_SLOT_IDS, ids=lambda s: repr(s)[:24])
async def test_bad_slot_ids_in_paths_are_4xx_problems(h: Harness, admin: User, raw: str) -> None:
    for method, path, body in _slot_routes(raw):
        r = await h.client.request(
            method, path, json=body, headers=admin.key("bad-id") if body else admin.headers
        )
        assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text)
        assert_problem(r, r.status_code, key_prefix=h.settings.key_prefix)


async def test_largest_slot_id_is_valid_and_unknown(h: Harness, admin: User) -> None:
    for method, path, body in _slot_routes("9223372036854775807"):
        r = await h.client.request(method, path, json=body, headers=admin.key("max-id"))
        assert_problem(r, 404, "not-found", key_prefix=h.settings.key_prefix)


async def test_large_slot_ids_round_trip_exactly(h: Harness, admin: User) -> None:
    big = 2**62 + 1  # not representable as a double: a float anywhere would show
    slot_id = await new_slot(h, admin, capacity=2, slot_id=big)
    assert slot_id == big
    r = await h.client.get(f"/slots/{big}", headers=admin.headers)
    assert r.status_code == 200 and r.json()["slot_id"] == big
    hold = await held(h, admin, big)
    assert hold["slot_id"] == big
    r = await h.client.get(f"/slots/{big - 1}", headers=admin.headers)
    assert_problem(r, 404)
    r = await h.client.post(f"/holds/{hold['hold_id']}/confirm", headers=admin.headers)
    assert r.status_code == 200 and r.json()["slot_id"] == big


def _body_routes(slot_id: int) -> list[tuple[str, str]]:
    return [
        ("POST", "/slots"),
        ("PATCH", f"/slots/{slot_id}"),
        ("POST", f"/slots/{slot_id}/hold"),
        ("POST", "/auth/login"),
        ("POST", "/login"),
    ]


async def test_invalid_json_is_422(h: Harness, admin: User, slot_id: int) -> None:
    for method, path in _body_routes(slot_id):
        for content in (b"{not json", b'{"capacity": 1,}', b"\xff", b"[1, 2"):
            r = await h.client.request(
                method,
                path,
                content=content,
                headers={**admin.key("bad-json"), "Content-Type": "application/json"},
            )
            assert_problem(r, 422, key_prefix=h.settings.key_prefix)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "application/octet-stream", "text/json"]
)
async def test_wrong_content_type_is_415(
    h: Harness, admin: User, slot_id: int, content_type: str
) -> None:
    for method, path in _body_routes(slot_id):
        r = await h.client.request(
            method,
            path,
            content=b'{"capacity": 1, "quantity": 1}',
            headers={**admin.key("text"), "Content-Type": content_type},
        )
        assert_problem(r, 415, "unsupported-media-type", key_prefix=h.settings.key_prefix)


async def test_json_with_parameters_or_suffix_is_accepted(
    h: Harness, admin: User, slot_id: int
) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        r = await h.client.patch(
            f"/slots/{slot_id}",
            content=b'{"label": "ok"}',
            headers={**admin.headers, "Content-Type": content_type},
        )
        assert r.status_code == 200, (content_type, r.text)


async def test_oversized_body_is_413(h: Harness, admin: User, slot_id: int) -> None:
    size = h.settings.max_body_bytes + 1
    padded = b'{"label": "' + b"x" * size + b'"}'
    for method, path in _body_routes(slot_id):
        r = await h.client.request(
            method,
            path,
            content=padded,
            headers={**admin.key("big"), "Content-Type": "application/json"},
        )
        assert_problem(r, 413, "payload-too-large", key_prefix=h.settings.key_prefix)


async def test_oversized_streamed_body_is_413(h: Harness, admin: User, slot_id: int) -> None:
    """No Content-Length (chunked): the limit holds while reading."""
    size = h.settings.max_body_bytes

    for method, path in _body_routes(slot_id):

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"label": "'
            for _ in range(4):
                yield b"x" * size
            yield b'"}'

        r = await h.client.request(
            method,
            path,
            content=chunks(),
            headers={**admin.key("stream"), "Content-Type": "application/json"},
        )
        assert "content-length" not in r.request.headers
        assert_problem(r, 413, "payload-too-large", key_prefix=h.settings.key_prefix)


async def test_lying_content_length_does_not_break_anything(
    h: Harness, admin: User, slot_id: int
) -> None:
    r = await h.client.post(
        "/slots",
        content=b'{"capacity": 1}',
        headers={**admin.headers, "Content-Type": "application/json", "Content-Length": "abc"},
    )
    assert r.status_code < 500, r.text


async def test_body_limit_is_configurable(shared: Shared) -> None:
    h = await shared.make(max_body_bytes=64)
    admin = await new_user(h, admin=True)
    small = await h.client.post("/slots", json={"capacity": 1}, headers=admin.headers)
    assert small.status_code == 201, small.text
    big = await h.client.post(
        "/slots", json={"capacity": 1, "label": "y" * 100}, headers=admin.headers
    )
    assert_problem(big, 413, "payload-too-large")
    login = await h.client.post(
        "/auth/login", json={"email": admin.email, "password": PASSWORD + "z" * 100}
    )
    assert_problem(login, 413)


async def test_unknown_route_and_method_are_problems(h: Harness, admin: User) -> None:
    for method, path in (
        ("GET", "/nope"),
        ("GET", "/slots/1/nope"),
        ("POST", "/holds/x/y/z"),
        ("GET", "/" + "a" * 5000),
    ):
        r = await h.client.request(method, path, headers=admin.headers)
        assert_problem(r, 404, key_prefix=h.settings.key_prefix)
    for method, path in (
        ("PUT", "/slots/1"),
        ("DELETE", "/slots/availability"),
        ("GET", "/slots/1/hold"),
        ("PATCH", "/holds/1-0123456789abcdef"),
        ("POST", "/healthz"),
    ):
        r = await h.client.request(method, path, headers=admin.headers)
        assert_problem(r, 405, key_prefix=h.settings.key_prefix)
        assert r.headers.get("allow")


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer " + "a" * 20_000},
        {"Authorization": "Bearer \u00e9\u00e9"},
        {"Idempotency-Key": "k", "Content-Type": "application/json; charset=\u00ff"},
        {"If-None-Match": '"' + "z" * 10_000 + '"'},
        {"X-Request-ID": "x" * 10_000},
    ],
    ids=["huge-token", "latin1-token", "odd-charset", "huge-etag", "huge-request-id"],
)
async def test_odd_headers_never_give_500(h: Harness, headers: dict[str, str]) -> None:
    encoded = {k: v.encode("latin-1") for k, v in headers.items()}
    for method, path in (("GET", "/slots/availability"), ("POST", "/slots/1/hold")):
        r = await h.client.request(method, path, headers=encoded)
        assert r.status_code < 500, r.text
        if r.status_code >= 400:
            assert_problem(r, r.status_code, key_prefix=h.settings.key_prefix)
