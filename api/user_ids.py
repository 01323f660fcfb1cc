"""A user id is text everywhere in the service (docs/decisions.md, "user_id").

It is the users row's bigint written in decimal: the engine keys and events use
it as an opaque string, a token carries it as its ``sub`` claim (a string, RFC
7519), and only the PostgreSQL row codecs turn it into the column's integer.
"""

from __future__ import annotations

__all__ = ["is_user_id", "user_id_json"]

_MAX_DIGITS = 19  # a PostgreSQL bigint


def is_user_id(text: str) -> bool:
    """Canonical decimal (no sign, no leading zero), so one user has one id."""
    return (
        0 < len(text) <= _MAX_DIGITS
        and text.isascii()
        and text.isdigit()
        and not text.startswith("0")
    )


def user_id_json(user_id: str) -> int | str:
    """The id as the API shows it: a JSON number (the contract's type)."""
    return int(user_id) if is_user_id(user_id) else user_id
