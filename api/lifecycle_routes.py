"""Extend a hold; the body of a (partial) confirm."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import engine
from sync.archived import archived_hold_refusal

from .context import AppContext
from .http import hold_body, json_response, read_json
from .problems import Problem

__all__ = ["confirm_quantity", "routes"]


async def confirm_quantity(request: Request, ctx: AppContext) -> int | None:
    """``{"quantity": k}`` of a confirm, or None (no body: the whole hold).

    Only the shape is checked here; k above the hold's quantity is the engine's
    refusal (422 too).
    """
    body = await read_json(request, ctx.settings.max_body_bytes, required=False)
    if body is None:
        return None
    if not isinstance(body, dict):
        raise Problem("validation-error", 'the body must be a JSON object like {"quantity": 1}')
    unknown = sorted(set(body) - {"quantity"})
    if unknown:
        raise Problem("validation-error", f"unknown fields: {', '.join(unknown)}")
    if "quantity" not in body:
        return None
    quantity = body["quantity"]
    top = ctx.settings.max_quantity
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= top:
        raise Problem("validation-error", f"quantity must be an integer from 1 to {top}")
    return quantity


async def extend_hold(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    principal = await ctx.tokens.authenticate(request)
    hold_id = request.path_params["hold_id"]
    try:
        try:
            outcome = await ctx.engine.lifecycle.extend(hold_id, principal.user_id)
        except engine.HoldNotFound:
            # A hold of an archived slot is read-only: 409, not 404 (sync/archive.py).
            refused = await archived_hold_refusal(ctx.pool, hold_id, principal.user_id)
            if refused is None:
                raise
            raise refused from None
    except engine.EngineError as exc:
        ctx.metrics.hold_changes.labels("extend", type(exc).__name__).inc()
        raise
    ctx.metrics.hold_changes.labels("extend", "extended").inc()
    return json_response(hold_body(outcome.hold))


routes = [
    Route("/holds/{hold_id}/extend", extend_hold, methods=["POST"], name="extend_hold"),
]
