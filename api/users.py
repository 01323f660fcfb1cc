"""Users in PostgreSQL, with argon2id password hashes."""

from __future__ import annotations

from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from sync.db import Pool

__all__ = [
    "User",
    "UserExists",
    "create_user",
    "find_user",
    "hasher",
    "role_of",
    "verify_password",
]

hasher = PasswordHasher()  # argon2id with the library's recommended parameters
# Verified against when the email is unknown, so both failures cost the same.
_DUMMY_HASH = hasher.hash("slotkeeper-no-such-user")


class UserExists(Exception):
    pass


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    email: str
    role: str
    password_hash: str


async def create_user(pool: Pool, email: str, password: str, *, role: str = "user") -> User:
    password_hash = hasher.hash(password)
    row = await pool.fetchrow(
        "INSERT INTO users (email, password_hash, role) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING RETURNING user_id",
        email,
        password_hash,
        role,
    )
    if row is None:
        raise UserExists(email)
    return User(str(row["user_id"]), email, role, password_hash)


async def find_user(pool: Pool, email: str) -> User | None:
    row = await pool.fetchrow(
        "SELECT user_id, email, role, password_hash FROM users WHERE lower(email) = lower($1)",
        email,
    )
    return None if row is None else User(**{**dict(row), "user_id": str(row["user_id"])})


async def role_of(pool: Pool, user_id: str) -> str | None:
    """The user's role as stored now, or None if there is no such user."""
    role: str | None = await pool.fetchval(
        "SELECT role FROM users WHERE user_id = $1", int(user_id)
    )
    return role


def verify_password(user: User | None, password: str) -> bool:
    """Constant-ish time: an unknown user still pays for one argon2 verification."""
    try:
        return hasher.verify(user.password_hash if user else _DUMMY_HASH, password) and (
            user is not None
        )
    except (VerificationError, InvalidHashError):
        return False
