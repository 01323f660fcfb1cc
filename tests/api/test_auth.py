"""SPEC "HTTP API" / Auth: login, refresh, revocation, rate limits, token checks, secrets."""

from __future__ import annotations

import secrets
import uuid

import httpx
import jwt
import pytest

from api.app import create_app
from api.context import AppContext
from api.settings import ConfigError, Settings

from .conftest import Harness, Shared
from .support import PASSWORD, assert_problem, craft_token, new_user

TOKEN_KEYS = {"access_token", "token_type", "expires_in"}


def _assert_token_body(r: httpx.Response, ttl_s: int = 3600) -> str:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == TOKEN_KEYS, body
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == ttl_s
    assert isinstance(body["access_token"], str) and body["access_token"]
    return str(body["access_token"])


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- login ---------------------------------------------------------------------


async def test_login_returns_a_bearer_token_that_works(h: Harness) -> None:
    user = await new_user(h)
    r = await h.client.post("/auth/login", json={"email": user.email, "password": PASSWORD})
    token = _assert_token_body(r)
    claims = jwt.decode(token, h.settings.jwt_secret, algorithms=["HS256"])
    assert claims["sub"] == user.user_id
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["jti"]
    ok = await h.client.get("/slots/availability", headers=_bearer(token))
    assert ok.status_code == 200, ok.text


async def test_access_token_lifetime_is_configurable(shared: Shared) -> None:
    h = await shared.make(access_token_ttl_s=120)
    user = await new_user(h)
    r = await h.client.post("/auth/login", json={"email": user.email, "password": PASSWORD})
    token = _assert_token_body(r, ttl_s=120)
    claims = jwt.decode(token, h.settings.jwt_secret, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 120


async def test_wrong_password_and_unknown_email_get_the_same_answer(h: Harness) -> None:
    user = await new_user(h)
    wrong = await h.client.post("/auth/login", json={"email": user.email, "password": "nope-nope"})
    unknown = await h.client.post(
        "/auth/login", json={"email": f"ghost-{uuid.uuid4().hex}@example.com", "password": "x"}
    )
    body = assert_problem(wrong, 401)
    assert_problem(unknown, 401)
    assert wrong.content == unknown.content
    assert body["type"] == unknown.json()["type"]

    def same(r: httpx.Response) -> dict[str, str]:
        return {k: v for k, v in r.headers.items() if k not in ("x-request-id", "content-length")}

    assert same(wrong) == same(unknown)


@pytest.mark.parametrize(
    "body",
    [{}, {"email": "a@example.com"}, {"email": 1, "password": "x"}, [], "x"],
    ids=["empty", "no-password", "email-not-string", "array", "string"],
)
async def test_login_with_a_malformed_body_is_422(h: Harness, body: object) -> None:
    r = await h.client.post("/auth/login", json=body)
    assert_problem(r, 422)


async def test_repeated_failures_lock_the_account_with_429(shared: Shared) -> None:
    h = await shared.make(login_max_failures_per_account=3, login_max_failures_per_address=1000)
    user = await new_user(h)
    other = await new_user(h)
    statuses = []
    # A fixed window may roll over once during the loop; 7 tries still reach 429.
    for _ in range(7):
        r = await h.client.post("/auth/login", json={"email": user.email, "password": "bad"})
        statuses.append(r.status_code)
        if r.status_code == 429:
            break
    assert statuses[-1] == 429, statuses
    assert set(statuses[:-1]) == {401} and len(statuses) >= 4, statuses
    body = assert_problem(r, 429)
    retry_after = int(r.headers["retry-after"])
    assert 1 <= retry_after <= h.settings.login_failure_window_s
    assert body.get("retry_after", retry_after) == retry_after

    # Blocked means blocked: even the right password waits (no oracle while locked).
    right = await h.client.post("/auth/login", json={"email": user.email, "password": PASSWORD})
    assert_problem(right, 429)
    assert "retry-after" in right.headers
    # Another account from the same address is not affected; the email's case neither helps.
    upper = await h.client.post(
        "/auth/login", json={"email": user.email.upper(), "password": PASSWORD}
    )
    assert_problem(upper, 429)
    fine = await h.client.post("/auth/login", json={"email": other.email, "password": PASSWORD})
    _assert_token_body(fine)


async def test_repeated_failures_from_one_address_give_429(shared: Shared) -> None:
    h = await shared.make(login_max_failures_per_address=3, login_max_failures_per_account=1000)
    user = await new_user(h)
    statuses = []
    for _ in range(7):
        ghost = f"ghost-{uuid.uuid4().hex}@example.com"
        r = await h.client.post("/auth/login", json={"email": ghost, "password": "bad"})
        statuses.append(r.status_code)
        if r.status_code == 429:
            break
    assert statuses[-1] == 429, statuses
    assert set(statuses[:-1]) == {401} and len(statuses) >= 4, statuses
    assert_problem(r, 429)
    assert int(r.headers["retry-after"]) >= 1
    # Every account is refused from this address...
    blocked = await h.client.post("/auth/login", json={"email": user.email, "password": PASSWORD})
    assert_problem(blocked, 429)
    # ...but not from another one (the same app and state, another client address).
    transport = httpx.ASGITransport(
        app=create_app(h.settings, context=h.ctx),
        raise_app_exceptions=False,
        client=("198.51.100.7", 4242),
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as elsewhere:
        r2 = await elsewhere.post("/auth/login", json={"email": user.email, "password": PASSWORD})
    _assert_token_body(r2)


async def test_compat_login_answers_get_and_post_alike(h: Harness) -> None:
    user = await new_user(h)
    good = {"email": user.email, "password": PASSWORD}
    for method in ("GET", "POST"):
        _assert_token_body(await h.client.request(method, "/login", json=good))
    bad = {**good, "password": "wrong"}
    refusals = [await h.client.request(method, "/login", json=bad) for method in ("GET", "POST")]
    for r in refusals:
        assert_problem(r, 401, "invalid-credentials")
    assert refusals[0].content == refusals[1].content
    # /auth/login is the new name and takes POST only.
    assert_problem(await h.client.get("/auth/login"), 405)


# -- refresh -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/auth/refresh"), ("GET", "/refresh"), ("POST", "/refresh")]
)
async def test_refresh_routes_answer_alike(h: Harness, method: str, path: str) -> None:
    user = await new_user(h)
    r = await h.client.request(method, path, headers=user.headers)
    new = _assert_token_body(r)
    assert new != user.token
    claims = jwt.decode(new, h.settings.jwt_secret, algorithms=["HS256"])
    assert claims["sub"] == user.user_id
    assert claims["role"] == "user"


async def test_refreshed_token_is_revoked_everywhere(h: Harness) -> None:
    admin = await new_user(h, admin=True)
    r = await h.client.post("/auth/refresh", headers=admin.headers)
    new = _assert_token_body(r)
    claims = jwt.decode(new, h.settings.jwt_secret, algorithms=["HS256"])
    assert claims["role"] == "admin"
    assert (await h.client.get("/slots/availability", headers=_bearer(new))).status_code == 200

    old = admin.headers
    for method, path in [
        ("GET", "/slots/availability"),
        ("GET", "/slots/1"),
        ("POST", "/slots"),
        ("GET", "/holds"),
        ("GET", "/holds/1-0123456789abcdef"),
    ]:
        refused = await h.client.request(method, path, headers=old, json={"capacity": 1})
        assert_problem(refused, 401)
    for method, path in [("POST", "/auth/refresh"), ("GET", "/refresh"), ("POST", "/refresh")]:
        again = await h.client.request(method, path, headers=old)
        assert_problem(again, 401)
    # The new token still works, and can itself be refreshed once.
    newer = await h.client.post("/auth/refresh", headers=_bearer(new))
    _assert_token_body(newer)


async def test_token_expired_within_the_window_can_be_refreshed(h: Harness) -> None:
    user = await new_user(h)
    expired = craft_token(h.settings.jwt_secret, user.user_id, expires_in_s=-3600)
    refused = await h.client.get("/slots/availability", headers=_bearer(expired))
    assert_problem(refused, 401)
    r = await h.client.post("/auth/refresh", headers=_bearer(expired))
    new = _assert_token_body(r)
    assert (await h.client.get("/slots/availability", headers=_bearer(new))).status_code == 200
    assert_problem(await h.client.post("/auth/refresh", headers=_bearer(expired)), 401)


async def test_token_expired_beyond_the_window_cannot_be_refreshed(h: Harness) -> None:
    user = await new_user(h)
    window = h.settings.refresh_window_s
    stale = craft_token(h.settings.jwt_secret, user.user_id, expires_in_s=-(window + 120))
    for method, path in [("POST", "/auth/refresh"), ("GET", "/refresh")]:
        assert_problem(await h.client.request(method, path, headers=_bearer(stale)), 401)


async def test_refresh_takes_the_role_as_stored_now(h: Harness) -> None:
    admin = await new_user(h, admin=True)
    await h.ctx.pool.execute(
        "UPDATE users SET role = 'user' WHERE user_id = $1", int(admin.user_id)
    )
    demoted = _assert_token_body(await h.client.post("/auth/refresh", headers=_bearer(admin.token)))
    assert jwt.decode(demoted, options={"verify_signature": False})["role"] == "user"
    r = await h.client.post("/slots", json={"capacity": 1}, headers=_bearer(demoted))
    assert_problem(r, 403)


async def test_refresh_of_a_deleted_user_is_refused(h: Harness) -> None:
    user = await new_user(h)
    await h.ctx.pool.execute("DELETE FROM users WHERE user_id = $1", int(user.user_id))
    assert_problem(await h.client.post("/auth/refresh", headers=_bearer(user.token)), 401)


async def test_refresh_window_is_configurable(shared: Shared) -> None:
    h = await shared.make(refresh_window_s=600)
    user = await new_user(h)
    inside = craft_token(h.settings.jwt_secret, user.user_id, expires_in_s=-300)
    outside = craft_token(h.settings.jwt_secret, user.user_id, expires_in_s=-900)
    _assert_token_body(await h.client.post("/auth/refresh", headers=_bearer(inside)))
    assert_problem(await h.client.post("/auth/refresh", headers=_bearer(outside)), 401)


# -- bad credentials on protected routes ----------------------------------------


def _bad_authorizations(secret: str) -> dict[str, str | None]:
    return {
        "missing": None,
        "empty": "",
        "bearer-only": "Bearer",
        "bearer-blank": "Bearer    ",
        "basic-scheme": "Basic dXNlcjpwYXNz",
        "token-scheme": "Token " + craft_token(secret, "1"),
        "no-scheme": craft_token(secret, "1"),
        "garbage": "Bearer not-a-jwt",
        "garbage-dots": "Bearer a.b.c",
        "bad-signature": "Bearer " + craft_token("another-secret-" + "y" * 40, "1"),
        "alg-none": "Bearer " + craft_token(secret, "1", algorithm="none"),
        "alg-hs512": "Bearer " + craft_token(secret, "1", algorithm="HS512"),
        "expired": "Bearer " + craft_token(secret, "1", expires_in_s=-600),
        "no-jti": "Bearer " + craft_token(secret, "1", drop=("jti",)),
        "no-exp": "Bearer " + craft_token(secret, "1", drop=("exp",)),
        "no-sub": "Bearer " + craft_token(secret, "1", drop=("sub",)),
        "sub-not-int": "Bearer " + craft_token(secret, "1", sub="admin"),
        "tampered": "Bearer " + _tamper(craft_token(secret, "1")),
        "exp-not-a-number": "Bearer " + craft_token(secret, "1", exp="soon"),
    }


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    forged = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"user"', b'"admin"')
    ).decode()
    return f"{header}.{forged}.{signature}"


BAD_AUTH_IDS = list(_bad_authorizations("x" * 40))


@pytest.mark.parametrize("case", BAD_AUTH_IDS)
async def test_bad_credentials_are_401_problems(h: Harness, case: str) -> None:
    value = _bad_authorizations(h.settings.jwt_secret)[case]
    headers = {} if value is None else {"Authorization": value}
    for method, path in [("GET", "/slots/availability"), ("POST", "/slots/1/hold")]:
        r = await h.client.request(method, path, headers={**headers, "Idempotency-Key": "k"})
        assert_problem(r, 401, key_prefix=h.settings.key_prefix)
        assert r.headers["www-authenticate"].lower().startswith("bearer")


PROTECTED = [
    ("GET", "/slots/availability"),
    ("GET", "/slots/1"),
    ("POST", "/slots"),
    ("PATCH", "/slots/1"),
    ("POST", "/slots/1/hold"),
    ("GET", "/holds"),
    ("GET", "/holds/1-0123456789abcdef"),
    ("POST", "/holds/1-0123456789abcdef/confirm"),
    ("DELETE", "/holds/1-0123456789abcdef"),
    ("POST", "/auth/refresh"),
    ("GET", "/refresh"),
    ("POST", "/refresh"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
async def test_every_other_route_needs_a_token(h: Harness, method: str, path: str) -> None:
    r = await h.client.request(method, path, headers={"Idempotency-Key": "k"})
    assert_problem(r, 401)
    # Malformed input behind the door is still answered 401 first.
    bad = await h.client.request(method, path.replace("1", "x"), content=b"{not json")
    assert_problem(bad, 401)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"])
async def test_operations_routes_need_no_token(h: Harness, path: str) -> None:
    r = await h.client.get(path)
    assert r.status_code == 200, r.text


async def test_admin_routes_refuse_users_with_403(h: Harness) -> None:
    user = await new_user(h)
    admin = await new_user(h, admin=True)
    created = await h.client.post("/slots", json={"capacity": 1}, headers=admin.headers)
    assert created.status_code == 201, created.text
    slot_id = created.json()["slot_id"]
    r = await h.client.post("/slots", json={"capacity": 1}, headers=user.headers)
    assert_problem(r, 403, "forbidden")
    r = await h.client.patch(f"/slots/{slot_id}", json={"capacity": 5}, headers=user.headers)
    assert_problem(r, 403, "forbidden")
    # A user cannot mint admin rights by editing the role claim (signature breaks).
    forged = _tamper(user.token)
    r = await h.client.post("/slots", json={"capacity": 1}, headers=_bearer(forged))
    assert_problem(r, 401)


# -- the secret -----------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    ["", "secret", "SECRET", "changeme", "password", "dev", "too-short-1234567890", "x" * 31],
)
def test_weak_or_missing_secret_is_refused_outside_dev_mode(secret: str) -> None:
    with pytest.raises(ConfigError, match="SLOTKEEPER_JWT_SECRET"):
        Settings(jwt_secret=secret).check_secret()
    with pytest.raises(ConfigError, match="SLOTKEEPER_JWT_SECRET"):
        Settings.from_env({"SLOTKEEPER_JWT_SECRET": secret}).check_secret()
    Settings(jwt_secret=secret, dev_mode=True).check_secret()  # dev mode makes its own


def test_strong_secret_is_accepted() -> None:
    Settings(jwt_secret=secrets.token_hex(32)).check_secret()
    Settings.from_env({"SLOTKEEPER_JWT_SECRET": secrets.token_urlsafe(48)}).check_secret()


def test_missing_secret_variable_is_refused() -> None:
    with pytest.raises(ConfigError, match="SLOTKEEPER_JWT_SECRET"):
        Settings.from_env({}).check_secret()
    Settings.from_env({"SLOTKEEPER_DEV_MODE": "1"}).check_secret()


async def test_the_server_refuses_to_start_with_a_weak_secret(h: Harness) -> None:
    weak = Settings(
        redis_url=h.settings.redis_url, database_url=h.settings.database_url, jwt_secret="secret"
    )
    with pytest.raises(ConfigError):
        await AppContext.build(weak)
