"""JWT access tokens: issue, verify, refresh within a window, revoke what was refreshed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt
from starlette.requests import Request

from engine.client import RedisClient
from sync.db import Pool

from .problems import Problem
from .revocation import Denylist
from .user_ids import is_user_id

__all__ = ["Principal", "TokenService"]

_LEEWAY_S = 5
_VERIFIED_CACHE = 100_000


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str  # the users row's id, as text (docs/decisions.md, "user_id")
    role: str
    jti: str
    expires_at: int

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _unauthorized(detail: str) -> Problem:
    return Problem(
        "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="slotkeeper"'}
    )


class TokenService:
    def __init__(
        self,
        *,
        secret: str,
        algorithm: str,
        ttl_s: int,
        refresh_window_s: int,
        redis: RedisClient,
        key_prefix: str,
        mirror_revocations: bool = True,
        revocation_pool: Pool | None = None,
    ) -> None:
        self._secret = secret
        self._algorithms = [algorithm]
        self._algorithm = algorithm
        self.ttl_s = ttl_s
        self.refresh_window_s = refresh_window_s
        self.denylist = Denylist(redis, key_prefix, mirror=mirror_revocations, pool=revocation_pool)
        # token -> its verified claims: a client sends the same token for an hour,
        # so the signature and JSON work is done once per token, not per request.
        self._verified: dict[str, Principal] = {}

    def issue(self, user_id: str, role: str) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "sub": user_id,
            "role": role,
            "iat": now,
            "exp": now + self.ttl_s,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._secret, algorithm=self._algorithm)
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.ttl_s}

    def _decode(self, token: str, *, verify_exp: bool) -> Principal:
        principal = self._verified.get(token)
        if principal is None:
            principal = self._verify(token)
            if len(self._verified) >= _VERIFIED_CACHE:
                del self._verified[next(iter(self._verified))]  # oldest first
            self._verified[token] = principal
        if verify_exp and principal.expires_at + _LEEWAY_S < time.time():
            raise _unauthorized("the access token has expired; refresh it")
        return principal

    def _verify(self, token: str) -> Principal:
        """Signature, algorithm and claims; expiry is checked per use by _decode."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=self._algorithms,
                options={"require": ["sub", "exp", "jti"], "verify_exp": False},
                leeway=_LEEWAY_S,
            )
            sub = claims["sub"]
            if not (isinstance(sub, str) and is_user_id(sub)):
                raise ValueError(sub)
            return Principal(
                user_id=sub,
                role=str(claims.get("role", "user")),
                jti=str(claims["jti"]),
                expires_at=int(claims["exp"]),
            )
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise _unauthorized("the access token is invalid") from None

    @staticmethod
    def bearer(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("send Authorization: Bearer <access token>")
        return token.strip()

    async def authenticate(self, request: Request) -> Principal:
        principal = self._decode(self.bearer(request), verify_exp=True)
        if await self.denylist.is_revoked(principal.jti):
            raise _unauthorized("the access token was refreshed and is no longer valid")
        request.state.user_id = principal.user_id
        return principal

    async def refresh(
        self, request: Request, current_role: Callable[[str], Awaitable[str | None]]
    ) -> dict[str, Any]:
        """A new token for a valid one, or one expired less than the window ago.

        The role comes from ``current_role`` (the user as stored now: a demoted
        admin is not refreshed into an admin; a deleted user is refused). The old
        token's jti is denied until it could no longer be refreshed; the SET NX
        makes a token refreshable exactly once, even under a race.
        """
        principal = self._decode(self.bearer(request), verify_exp=False)
        now = int(time.time())
        refreshable_until = principal.expires_at + self.refresh_window_s
        if now > refreshable_until:
            raise _unauthorized("the access token expired too long ago; log in again")
        role = await current_role(principal.user_id)
        if role is None:
            raise _unauthorized("the user of this token no longer exists")
        first = await self.denylist.revoke(
            principal.jti, max(1, refreshable_until - now + _LEEWAY_S)
        )
        if not first:
            raise _unauthorized("the access token was already refreshed")
        request.state.user_id = principal.user_id
        return self.issue(principal.user_id, role)
