"""Helpers for the API behaviour tests (the module-wide ``shared`` database and its
``h`` app are fixtures in conftest.py).

- ``new_user``: a user straight into PostgreSQL with one cached argon2 hash (a
  fresh hash costs about 0.25 s), and its bearer headers;
- ``assert_problem``: every error is RFC 9457 and gives nothing of the internals away.
"""

from __future__ import annotations

import functools
import re
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from jwt.warnings import InsecureKeyLengthWarning

from api.users import hasher

from .conftest import Harness

PASSWORD = "pw-123456"
PROBLEM = "application/problem+json"
_LEAKS = ("traceback", "select ", "insert ", "redis", "asyncpg", ".lua", 'file "', "{p")
_LINK_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="next"')


@functools.cache
def password_hash() -> str:
    return hasher.hash(PASSWORD)


@dataclass
class User:
    user_id: str
    email: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def key(self, key: str) -> dict[str, str]:
        """Bearer headers plus an Idempotency-Key."""
        return {**self.headers, "Idempotency-Key": key}


async def new_user(h: Harness, *, admin: bool = False) -> User:
    role = "admin" if admin else "user"
    email = f"u{uuid.uuid4().hex[:12]}@example.com"
    user_id = await h.ctx.pool.fetchval(
        "INSERT INTO users (email, password_hash, role) VALUES ($1, $2, $3) RETURNING user_id",
        email,
        password_hash(),
        role,
    )
    token = h.ctx.tokens.issue(str(user_id), role)["access_token"]
    return User(str(user_id), email, role, token)


async def new_slot(h: Harness, admin: User, capacity: int = 10, **fields: Any) -> int:
    r = await h.client.post("/slots", json={"capacity": capacity, **fields}, headers=admin.headers)
    assert r.status_code == 201, r.text
    return int(r.json()["slot_id"])


async def make_hold(
    h: Harness, user: User, slot_id: int, key: str | None = None, quantity: int | None = None
) -> httpx.Response:
    body = None if quantity is None else {"quantity": quantity}
    return await h.client.post(
        f"/slots/{slot_id}/hold", json=body, headers=user.key(key or uuid.uuid4().hex)
    )


async def held(h: Harness, user: User, slot_id: int, quantity: int | None = None) -> dict[str, Any]:
    """A hold that must succeed; its body."""
    r = await make_hold(h, user, slot_id, quantity=quantity)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def remaining(h: Harness, user: User, slot_id: int) -> int:
    r = await h.client.get(f"/slots/{slot_id}", headers=user.headers)
    assert r.status_code == 200, r.text
    return int(r.json()["remaining"])


def craft_token(
    secret: str,
    user_id: str,
    *,
    expires_in_s: int = 3600,
    role: str = "user",
    algorithm: str = "HS256",
    drop: tuple[str, ...] = (),
    **claims: Any,
) -> str:
    """A token built outside the app (expired, forged, malformed ones)."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": user_id,
        "role": role,
        "iat": now - 60,
        "exp": now + expires_in_s,
        "jti": uuid.uuid4().hex,
        **claims,
    }
    for name in drop:
        payload.pop(name, None)
    key = None if algorithm == "none" else secret
    with warnings.catch_warnings():  # a short key for HS512 is the point of some cases
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(payload, key, algorithm=algorithm)


def next_link(r: httpx.Response) -> str | None:
    match = _LINK_NEXT.search(r.headers.get("link", ""))
    return match.group(1) if match else None


def assert_problem(
    r: httpx.Response, status: int, slug: str | None = None, *, key_prefix: str | None = None
) -> dict[str, Any]:
    """An RFC 9457 answer with this status (and type slug), leaking no internals."""
    assert r.status_code == status, f"{r.status_code} != {status}: {r.text}"
    assert r.headers["content-type"].split(";")[0] == PROBLEM, r.headers["content-type"]
    assert "x-request-id" in r.headers
    body: dict[str, Any] = r.json()
    assert isinstance(body, dict), body
    for name in ("type", "title", "status", "detail"):
        assert name in body, f"{name} missing from {body}"
    assert body["status"] == status, body
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if slug is not None:
        assert body["type"].endswith(slug), body
    text = r.text.lower()
    for leak in _LEAKS:
        assert leak not in text, f"{leak!r} leaked in {r.text}"
    if key_prefix is not None:
        assert key_prefix.lower() not in text, r.text
    return body
