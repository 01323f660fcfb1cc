"""Hold lifecycle beyond make/confirm/cancel: extending a hold, partial confirms.

Kept apart from engine.py so the Engine stays small; the Engine builds one
``Lifecycle`` over its own command runner and exposes it as ``engine.lifecycle``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import errors
from .models import Hold, Outcome
from .replies import refusal, text
from .scripts import Scripts
from .settings import EngineSettings

__all__ = ["Lifecycle", "confirm_refusal"]

# Engine._hold_command: (script, hold_id, user_id, now_ms, *extra args) -> reply.
_Runner = Callable[..., Awaitable[Any]]


class Lifecycle:
    def __init__(self, run: _Runner, scripts: Scripts, settings: EngineSettings) -> None:
        self._run = run
        self._scripts = scripts
        self._ttl_ms = str(settings.hold_ttl_s * 1000)
        self._max_extensions = str(settings.hold_max_extensions)
        self._max_lifetime_ms = str(settings.hold_max_lifetime_s * 1000)

    async def extend(
        self, hold_id: str, user_id: str | None, *, now_ms: int | None = None
    ) -> Outcome:
        """Move a live hold's expiry to now + the hold lifetime (lua/extend.lua).

        Raises ExtensionLimit past the caps, HoldExpired, HoldConfirmed or
        HoldCancelled when the hold is no longer held, HoldNotFound.
        """
        reply = await self._run(
            self._scripts.extend,
            hold_id,
            user_id,
            now_ms,
            self._ttl_ms,
            self._max_extensions,
            self._max_lifetime_ms,
        )
        tag = text(reply[0])
        if tag == "extended":
            return Outcome(Hold.from_stored(reply[1]), changed=True)
        if tag == "extension_limit":
            raise errors.ExtensionLimit(hold_id, int(reply[1]), int(reply[2]))
        if tag == "expired":
            raise errors.HoldExpired(Hold.from_stored(reply[1]))
        if tag == "confirmed":
            raise errors.HoldConfirmed(Hold.from_stored(reply[1]))
        if tag == "cancelled":
            raise errors.HoldCancelled(Hold.from_stored(reply[1]))
        raise refusal(tag, reply, hold_id=hold_id)


def confirm_refusal(
    tag: str, reply: Sequence[Any], hold_id: str, quantity: int | None
) -> errors.EngineError:
    """The error for confirm.lua's quantity refusals."""
    if tag == "quantity_mismatch":
        return errors.ConfirmMismatch(Hold.from_stored(reply[1]), quantity or 0)
    return errors.QuantityTooLarge(hold_id, int(reply[1]))
