"""Users in PostgreSQL, with argon2id password hashes."""

from __future__ import annotations

from dataclasses import dataclass

from sync.db import Pool

from .hashing import hasher

__all__ = [
    "User",
    "UserExists",
    "create_user",
    "find_user",
    "hasher",
    "role_of",
    "update_password_hash",
]


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


async def update_password_hash(pool: Pool, user_id: str, password_hash: str) -> None:
    """Store a re-hash made with the current argon2 parameters."""
    await pool.execute(
        "UPDATE users SET password_hash = $2 WHERE user_id = $1", int(user_id), password_hash
    )


async def role_of(pool: Pool, user_id: str) -> str | None:
    """The user's role as stored now, or None if there is no such user."""
    role: str | None = await pool.fetchval(
        "SELECT role FROM users WHERE user_id = $1", int(user_id)
    )
    return role
