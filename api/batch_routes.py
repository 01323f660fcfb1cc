"""POST /holds/batch: many holds in one request, each judged on its own.

Every item gets the rules of a single hold (idempotency with its replay marker,
caps, the per-user rate limit); the answer lists one result per item, in order.
The items go to Redis as one script call per partition (engine/batch.py,
lua/hold_batch.lua), sent as one pipeline (docs/decisions.md, "Hold batches").
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import engine
from engine import Outcome
from engine.batch import HoldItem
from engine.keys import MAX_SLOT_ID
from sync.archived import replay_or_refuse
from sync.holds import stored_hold

from .auth import Principal
from .context import AppContext
from .http import hold_body, json_response, read_json
from .problems import Problem, engine_problem
from .user_ids import is_user_id

__all__ = ["routes"]

_ITEM_FIELDS = {"slot_id", "quantity", "idempotency_key", "user_id"}
# Room for a long idempotency key per item, whatever the single-request limit.
_BYTES_PER_ITEM = 512


@dataclass(frozen=True, slots=True)
class _Item:
    slot_id: int
    quantity: int
    key: str
    user_id: str


def _positive(value: Any, name: str, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise Problem("validation-error", f"{name} must be an integer from 1 to {top}")
    return value


def _item(raw: Any, principal: Principal, max_quantity: int) -> _Item:
    """One item, or the Problem that is its result."""
    if not isinstance(raw, dict):
        raise Problem("validation-error", "an item must be a JSON object")
    unknown = sorted(set(raw) - _ITEM_FIELDS)
    if unknown:
        raise Problem("validation-error", f"unknown fields: {', '.join(unknown)}")
    if "slot_id" not in raw:
        raise Problem("validation-error", "slot_id is required")
    slot_id = _positive(raw["slot_id"], "slot_id", MAX_SLOT_ID)
    quantity = _positive(raw.get("quantity", 1), "quantity", max_quantity)
    key = raw.get("idempotency_key")
    if (
        not isinstance(key, str)
        or not 1 <= len(key) <= 255
        or not all(" " <= c <= "~" for c in key)
    ):
        raise Problem(
            "validation-error", "idempotency_key must be 1 to 255 printable ASCII characters"
        )
    user_id = principal.user_id
    if "user_id" in raw:
        value = raw["user_id"]
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else ""
        if not is_user_id(text) or int(text) > MAX_SLOT_ID:
            raise Problem("validation-error", "user_id must be a user's id (a positive integer)")
        user_id = text
    return _Item(slot_id, quantity, key, user_id)


async def _unknown_users(ctx: AppContext, user_ids: set[str]) -> set[str]:
    if not user_ids:
        return set()
    rows = await ctx.pool.fetch(
        "SELECT user_id FROM users WHERE user_id = ANY($1::bigint[])", [int(u) for u in user_ids]
    )
    return user_ids - {str(r["user_id"]) for r in rows}


async def _hold_items(ctx: AppContext, items: list[_Item]) -> list[Outcome | engine.EngineError]:
    """Each item's hold or refusal, in order; a hold that has left Redis replays
    from PostgreSQL as hold_or_replay does. BackendUnavailable fails the whole
    request (503: replay it with the same keys)."""
    outcomes = await ctx.engine.batch.hold_many(
        [HoldItem(i.slot_id, i.user_id, i.key, i.quantity) for i in items]
    )
    for n, outcome in enumerate(outcomes):
        if isinstance(outcome, engine.HoldArchived):
            hold = await stored_hold(ctx.pool, outcome.hold_id)
            if hold is not None:
                outcomes[n] = Outcome(hold, changed=False)
        elif isinstance(outcome, engine.SlotNotFound):
            # An archived slot: a replay from PostgreSQL, or 409 slot-archived.
            item = items[n]
            try:
                replayed = await replay_or_refuse(
                    ctx.pool, item.slot_id, item.user_id, item.key, item.quantity
                )
            except engine.EngineError as refused:
                outcomes[n] = refused
            else:
                outcomes[n] = outcome if replayed is None else replayed
    return outcomes


def _problem(problem: Problem) -> dict[str, Any]:
    return {"status": problem.status, "problem": problem.body()}


async def create_batch(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    principal = await ctx.tokens.authenticate(request)
    top = ctx.settings.max_batch
    limit = max(ctx.settings.max_body_bytes, _BYTES_PER_ITEM * top)
    body = await read_json(request, limit)
    if not isinstance(body, dict) or set(body) != {"items"}:
        raise Problem("validation-error", 'the body must be a JSON object {"items": [...]}')
    raw_items = body["items"]
    if not isinstance(raw_items, list) or not 1 <= len(raw_items) <= top:
        raise Problem("validation-error", f"items must be a list of 1 to {top} items")
    if not principal.is_admin and any(isinstance(r, dict) and "user_id" in r for r in raw_items):
        # A caller acting for others without the right is refused as a whole.
        raise Problem("forbidden", "only an admin token may name user_id")

    results: list[dict[str, Any] | None] = [None] * len(raw_items)
    items: dict[int, _Item] = {}
    for n, raw in enumerate(raw_items):
        try:
            items[n] = _item(raw, principal, ctx.settings.max_quantity)
        except Problem as problem:
            results[n] = _problem(problem)
    unknown = await _unknown_users(
        ctx, {i.user_id for i in items.values() if i.user_id != principal.user_id}
    )
    for n in [n for n, i in items.items() if i.user_id in unknown]:
        detail = f"user {items.pop(n).user_id} does not exist"
        results[n] = _problem(Problem("validation-error", detail))
    outcomes_seen: Counter[str] = Counter()
    if ctx.settings.hold_rate_per_minute and items:
        waits = await ctx.hold_rate.hit_many([i.user_id for i in items.values()])
        for n, wait in zip(list(items), waits, strict=True):
            if wait:
                del items[n]
                outcomes_seen["rate_limited"] += 1
                detail = f"at most {ctx.settings.hold_rate_per_minute} holds a minute per user"
                results[n] = _problem(Problem("rate-limited", detail, retry_after=wait))

    # One script call per partition (engine/batch.py), all in one pipeline.
    outcomes = await _hold_items(ctx, list(items.values()))
    changed = False
    for n, outcome in zip(list(items), outcomes, strict=True):
        if isinstance(outcome, engine.EngineError):
            outcomes_seen[type(outcome).__name__] += 1
            results[n] = _problem(engine_problem(outcome))
        else:
            changed = changed or outcome.changed
            outcomes_seen["created" if outcome.changed else "replayed"] += 1
            result: dict[str, Any] = {"status": 201, "hold": hold_body(outcome.hold)}
            if not outcome.changed:
                result["replayed"] = True
            results[n] = result
    for name, count in outcomes_seen.items():  # once per outcome, not per item
        ctx.metrics.holds.labels(name).inc(count)
    if changed:
        ctx.cache.invalidate()
    return json_response({"results": results})


routes = [Route("/holds/batch", create_batch, methods=["POST"], name="create_batch")]
