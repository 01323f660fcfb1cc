"""Availability as ready-made bytes: content codings, per-coding validators, fields=,
and pages cached per snapshot (issue 12).
"""

from __future__ import annotations

import gzip
from typing import Any

import httpx
import pytest

from api.availability_routes import SLOT_FIELDS
from api.representation import GZIP_MIN_BYTES, Representation, wants_gzip

from .conftest import Harness, Shared
from .support import User, assert_problem, held, new_slot, new_user, next_link

URL = "/slots/availability"


@pytest.fixture
async def admin(h: Harness) -> User:
    return await new_user(h, admin=True)


@pytest.fixture
async def user(h: Harness) -> User:
    return await new_user(h)


async def _raw(
    h: Harness, user: User, encoding: str, url: str = URL, **headers: str
) -> tuple[httpx.Response, bytes]:
    """The answer and its body as sent (httpx would otherwise decode it)."""
    sent = {**user.headers, "Accept-Encoding": encoding, **headers}
    async with h.client.stream("GET", url, headers=sent) as r:
        raw = b"".join([chunk async for chunk in r.aiter_raw()])
    return r, raw


# -- Accept-Encoding ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "gzip_wanted"),
    [
        ("", False),
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
        ("gzip;q=0.5", True),  # identity unnamed: acceptable, but last
        ("gzip ; q=0.5 , identity", False),  # identity q=1 beats gzip q=0.5
        ("identity;q=0.5, gzip;q=0.5", True),  # a tie goes to the smaller body
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("gzip;q=0.001", True),
        ("identity", False),
        ("deflate, br", False),
        ("*", True),
        ("*;q=0", False),  # nothing acceptable: identity all the same
        ("*, gzip;q=0", False),
        ("identity;q=0", False),  # gzip not offered by the client: identity
        ("gzip;q=abc", False),  # malformed elements are ignored
        ("gzip;q=2", False),
        ("gzip;q=0.0001", False),
        ("gzip;q=1.5", False),
        (",,; ,gzip", True),
    ],
)
def test_accept_encoding_q_values(header: str, gzip_wanted: bool) -> None:
    assert wants_gzip(header) is gzip_wanted


def test_a_body_is_compressed_once() -> None:
    rep = Representation(b'[{"slot_id":1}]' * 100)
    assert rep.gzip() is rep.gzip()
    assert gzip.decompress(rep.gzip()) == rep.body
    body, etag, gzipped = rep.select("gzip")
    assert (body, gzipped) == (rep.gzip(), True) and etag != rep.etag
    assert rep.select("identity") == (rep.body, rep.etag, False)


def test_a_small_body_is_sent_as_is() -> None:
    small = Representation(b"1" * (GZIP_MIN_BYTES - 1))
    assert len(small.body) < GZIP_MIN_BYTES
    assert small.select("gzip") == (small.body, small.etag, False)


async def test_gzip_answer_is_the_identity_body(h: Harness, admin: User, user: User) -> None:
    for n in range(10):
        await new_slot(h, admin, capacity=3 + n, label=f"gate {n}")
    plain, plain_raw = await _raw(h, user, "identity")
    packed, packed_raw = await _raw(h, user, "gzip")
    assert plain.status_code == packed.status_code == 200
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert gzip.decompress(packed_raw) == plain_raw
    assert int(packed.headers["content-length"]) == len(packed_raw) < len(plain_raw)
    for r in (plain, packed):
        assert r.headers["vary"] == "Accept-Encoding"
        assert r.headers["content-type"] == "application/json"
        assert r.headers["cache-control"] == "private, max-age=0"
    # One strong validator per representation (RFC 9110 §8.8.3).
    assert packed.headers["etag"] != plain.headers["etag"]
    assert not packed.headers["etag"].startswith("W/")
    # A page is negotiated the same way.
    page, page_raw = await _raw(h, user, "gzip", f"{URL}?limit=9")
    assert page.headers["content-encoding"] == "gzip"
    assert len(httpx.Response(200, content=gzip.decompress(page_raw)).json()) == 9
    # A small one is sent as is (gzip would make it bigger), Vary all the same.
    small, small_raw = await _raw(h, user, "gzip", f"{URL}?limit=1")
    assert "content-encoding" not in small.headers and small_raw.startswith(b"[{")
    assert small.headers["vary"] == "Accept-Encoding"


async def test_not_modified_per_coding(h: Harness, admin: User, user: User) -> None:
    for _ in range(10):
        await new_slot(h, admin, capacity=2)
    plain, _ = await _raw(h, user, "identity")
    packed, _ = await _raw(h, user, "gzip")
    for encoding, etag in (("identity", plain.headers["etag"]), ("gzip", packed.headers["etag"])):
        for header in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
            r, raw = await _raw(h, user, encoding, **{"If-None-Match": header})
            assert r.status_code == 304, (encoding, header)
            assert raw == b""
            assert r.headers["etag"] == etag
            assert r.headers["vary"] == "Accept-Encoding"
            assert "content-encoding" not in r.headers
    # The other coding's validator does not match: the full answer, in this coding.
    r, raw = await _raw(h, user, "gzip", **{"If-None-Match": plain.headers["etag"]})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    r, raw = await _raw(h, user, "identity", **{"If-None-Match": packed.headers["etag"]})
    assert r.status_code == 200 and "content-encoding" not in r.headers


# -- fields= -----------------------------------------------------------------------


async def _items(h: Harness, user: User, **params: Any) -> list[dict[str, Any]]:
    r = await h.client.get(URL, params=params, headers=user.headers)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()
    return items


async def test_fields_keep_only_the_named_keys(h: Harness, admin: User, user: User) -> None:
    labelled = await new_slot(h, admin, capacity=4, label="dock")
    plain = await new_slot(h, admin, capacity=5)
    full = {item["slot_id"]: item for item in await _items(h, user)}
    polled = await _items(h, user, fields="slot_id,remaining")
    assert [item["slot_id"] for item in polled] == list(full)
    assert all(set(item) == {"slot_id", "remaining"} for item in polled)
    assert {i["slot_id"]: i["remaining"] for i in polled} == {
        k: v["remaining"] for k, v in full.items()
    }
    # slot_id always; a field a slot does not have stays out; order does not matter.
    by_id = {i["slot_id"]: i for i in await _items(h, user, fields="label , capacity")}
    assert by_id[labelled] == {"slot_id": labelled, "capacity": 4, "label": "dock"}
    assert by_id[plain] == {"slot_id": plain, "capacity": 5}
    assert await _items(h, user, fields="capacity,label") == await _items(
        h, user, fields="label,capacity"
    )
    # Every field named is the full answer.
    assert await _items(h, user, fields=",".join(SLOT_FIELDS)) == list(full.values())
    # With filters and pages: the next link keeps fields.
    first = await h.client.get(
        URL, params={"fields": "remaining", "limit": 1}, headers=user.headers
    )
    link = next_link(first)
    assert link is not None and "fields=remaining" in link
    second = await h.client.get(link, headers=user.headers)
    assert set(second.json()[0]) == {"slot_id", "remaining"}


@pytest.mark.parametrize("value", ["bogus", "slot_id,bogus", "remaining,,capacity", "", "held"])
async def test_unknown_field_is_400_naming_it(h: Harness, user: User, value: str) -> None:
    r = await h.client.get(URL, params={"fields": value}, headers=user.headers)
    body = assert_problem(r, 400, "bad-request", key_prefix=h.settings.key_prefix)
    unknown = next(n.strip() for n in value.split(",") if n.strip() not in SLOT_FIELDS)
    assert repr(unknown) in body["detail"]


# -- pages cached as bytes ---------------------------------------------------------


async def test_pages_are_cached_per_snapshot(shared: Shared) -> None:
    # A long staleness bound: only a change on this node makes a new snapshot.
    h = await shared.make(availability_cache_ms=600_000)
    admin = await new_user(h, admin=True)
    user = await new_user(h)
    slot_id = await new_slot(h, admin, capacity=5)
    query = "limit=2&fields=remaining"

    async def page() -> Any:
        r = await h.client.get(f"{URL}?{query}", headers={**user.headers, "Accept-Encoding": ""})
        assert r.status_code == 200, r.text
        snap = await h.ctx.cache.get()
        cached = snap.pages.get(query.encode())
        assert cached is not None and cached.representation.body == r.content
        return cached

    first = await page()
    again = await page()
    assert again is first and again.representation.body is first.representation.body
    before = await h.ctx.cache.get()
    assert before.pages.get(b"") is None  # nothing rendered until asked
    await h.client.get(URL, headers=user.headers)
    assert before.pages.get(b"") is not None
    assert before.pages.get(b"").representation is before.full  # type: ignore[union-attr]

    await held(h, user, slot_id)  # invalidates: the next read builds a new snapshot
    after = await page()
    assert after is not first
    assert (await h.ctx.cache.get()).generation > before.generation
