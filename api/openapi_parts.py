"""Building blocks of the OpenAPI document, shared by the modules that describe routes."""

from __future__ import annotations

from typing import Any

from .problems import PROBLEM_TYPES, problem_type_uri

__all__ = [
    "AUTH",
    "BEARER",
    "BODY",
    "SLOT_ID",
    "TIME",
    "json_body",
    "op",
    "problems",
    "ref",
]

TIME = {"type": "string", "format": "date-time"}
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
# Problems every authenticated route may answer, and every route with a JSON body.
AUTH = ("unauthorized", "backend-unavailable")
BODY = ("payload-too-large", "unsupported-media-type", "validation-error")
SLOT_ID = {
    "name": "slot_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def problems(*slugs: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for slug in slugs:
        status, title = PROBLEM_TYPES[slug]
        entry = out.setdefault(
            str(status),
            {
                "description": "",
                "content": {"application/problem+json": {"schema": ref("Problem")}},
            },
        )
        text = f"{title} (`{problem_type_uri(slug)}`)"
        entry["description"] = f"{entry['description']}; {text}" if entry["description"] else text
    return out


def op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": responses, **extra}
