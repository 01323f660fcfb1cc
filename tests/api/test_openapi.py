"""The OpenAPI document is OpenAPI 3.1 and the truth about every route, both ways."""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import Route

from api.app import create_app
from api.http import slot_body
from engine import Slot

from .conftest import Harness

_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")
# Routes that answer without a bearer token (SPEC: health, metrics, the OpenAPI
# document and its page, and logging in).
# The dashboard page and its assets are public too: the admin signs in on the page.
_PUBLIC = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/auth/login", "/login"}
_PUBLIC |= {"/dashboard", "/dashboard/assets/{name}"}
_SAMPLE_PARAMS = {
    "slot_id": "1",
    "hold_id": "no-such-hold",
    "group_id": "g1-0000000000000000",
    "webhook_id": "1",
    "entry_id": "no-such-entry",
    "name": "dashboard.js",
}

Operation = tuple[str, str]


async def _document(harness: Harness) -> dict[str, Any]:
    r = await harness.client.get("/openapi.json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    doc: dict[str, Any] = r.json()
    return doc


def _app_operations(harness: Harness) -> set[Operation]:
    app = create_app(harness.settings, context=harness.ctx)
    found: set[Operation] = set()
    for route in app.routes:
        assert isinstance(route, Route), f"unexpected route type {route!r}"
        # Starlette's convertors (``{id:int}``) are not part of the public template.
        path = _PARAM.sub(lambda m: "{" + m.group(1) + "}", route.path)
        for method in route.methods or ():
            if method != "HEAD":  # Starlette adds HEAD to every GET on its own
                found.add((path, method.lower()))
    return found


def _doc_operations(doc: dict[str, Any]) -> dict[Operation, dict[str, Any]]:
    return {
        (path, method): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in _METHODS
    }


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"non-local $ref {ref}"
    node: Any = doc
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"$ref {ref} does not resolve"
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


async def test_document_is_openapi_3_1(harness: Harness) -> None:
    doc = await _document(harness)
    assert re.fullmatch(r"3\.1\.\d+", doc["openapi"]), doc["openapi"]
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["paths"] and all(path.startswith("/") for path in doc["paths"])
    for name in ("Problem", "Hold", "Slot", "Token"):
        assert doc["components"]["schemas"][name]["type"] == "object", name


async def test_paths_and_methods_match_the_app_routes(harness: Harness) -> None:
    documented = set(_doc_operations(await _document(harness)))
    served = _app_operations(harness)
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"


async def test_every_operation_documents_success_and_its_errors(harness: Harness) -> None:
    doc = await _document(harness)
    schemes = doc.get("components", {}).get("securitySchemes", {})
    for (path, method), op in _doc_operations(doc).items():
        responses = op.get("responses", {})
        where = f"{method.upper()} {path}"
        assert any(code.startswith("2") for code in responses), f"{where}: no 2xx"
        for code, response in responses.items():
            assert re.fullmatch(r"[1-5](\d\d|XX)|default", code), f"{where}: bad code {code}"
            assert "description" in response, f"{where} {code}: no description"
        for requirement in op.get("security", []):
            assert set(requirement) <= set(schemes), f"{where}: unknown security scheme"
        if op.get("security"):
            assert "401" in responses, f"{where}: needs auth but documents no 401"


async def test_auth_requirements_match_behaviour(harness: Harness) -> None:
    """Every route is called without a token: the document says which ones answer 401."""
    operations = _doc_operations(await _document(harness))
    for path, method in sorted(_app_operations(harness)):
        url = _PARAM.sub(lambda m: _SAMPLE_PARAMS[m.group(1)], path)
        r = await harness.client.request(method.upper(), url)
        op = operations[(path, method)]
        where = f"{method.upper()} {path}"
        if path in _PUBLIC:
            assert r.status_code != 401, f"{where} is public but answered 401"
            assert not op.get("security"), f"{where} is public but documents security"
        else:
            assert r.status_code == 401, f"{where} answered {r.status_code} without a token"
            assert r.headers["content-type"] == "application/problem+json"
            assert op.get("security"), f"{where} needs a token but documents no security"
            assert "401" in op["responses"], f"{where} answers 401 but does not document it"


async def test_path_parameters_are_declared(harness: Harness) -> None:
    doc = await _document(harness)
    for (path, method), op in _doc_operations(doc).items():
        in_template = set(_PARAM.findall(path))
        declared = {}
        for param in doc["paths"][path].get("parameters", []) + op.get("parameters", []):
            param = _resolve(doc, param["$ref"]) if "$ref" in param else param
            if param["in"] == "path":
                declared[param["name"]] = param
        assert set(declared) == in_template, f"{method.upper()} {path}: {sorted(declared)}"
        assert all(p.get("required") is True for p in declared.values())


async def test_every_ref_resolves(harness: Harness) -> None:
    doc = await _document(harness)
    refs = _refs(doc)
    assert refs, "the document uses no $ref at all"
    for ref in set(refs):
        _resolve(doc, ref)


async def test_availability_documents_fields_and_codings(harness: Harness) -> None:
    doc = await _document(harness)
    op = doc["paths"]["/slots/availability"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    fields = params["fields"]
    assert (fields["in"], fields["style"], fields["explode"]) == ("query", "form", False)
    # The names fields= accepts are exactly the keys a slot can carry.
    every = Slot(1, 5, 3, 2, 0, label="x", starts_at="s", ends_at="e")
    assert fields["schema"]["items"]["enum"] == list(slot_body(every))
    schemas = doc["components"]["schemas"]
    assert set(schemas["SlotFields"]["properties"]) == set(slot_body(every))
    assert schemas["SlotFields"]["required"] == ["slot_id"]
    assert {"ETag", "Vary", "Content-Encoding", "Link"} <= set(op["responses"]["200"]["headers"])
