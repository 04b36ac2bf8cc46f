"""The OpenAPI 3.1 document, built from the route table and the protocol's models.

Every status a route can answer is derived from what the route is (who may call it, whether it
names a resource, takes a body or a query, writes, needs the database), never listed by hand, so a
new route is documented truthfully as soon as it is in the table.
"""

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from phonefleet import __version__
from phonefleet.protocol.models import ErrorBody
from phonefleet.server.artifacts import NAME
from phonefleet.server.outage import RETRY_AFTER_SEC
from phonefleet.server.routes import Route

REF = "#/components/schemas/{model}"
WRITES = ("POST", "PUT", "PATCH", "DELETE")
MAX_ID = 2**63 - 1


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is left out, never null: drop the ``null`` branch pydantic gives an optional one."""
    branches = schema.get("anyOf")
    if branches is None:
        return schema
    kept = [b for b in branches if b.get("type") != "null"]
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    return {**rest, **kept[0]} if len(kept) == 1 else {**rest, "anyOf": kept}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    return [
        {"name": name, "in": "query", "required": name in schema.get("required", []), "schema": _without_null(prop)}
        for name, prop in schema.get("properties", {}).items()
    ]


def _path_parameters(path: str) -> list[dict[str, Any]]:
    params = []
    if "{id}" in path:
        params.append({"name": "id", "in": "path", "required": True,
                       "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}})
    if "{name}" in path:
        params.append({"name": "name", "in": "path", "required": True,
                       "schema": {"type": "string", "pattern": NAME.pattern}})
    return params


def error_statuses(r: Route) -> dict[str, str]:
    """Each error status the route can answer, with why, from the route's properties."""
    out: dict[str, str] = {}
    if r.access != "public":
        out["401"] = ("No bearer token or session cookie, or one the server does not know or that ended (a refused "
                      "Supabase JWT: the message says why)")
        out["403"] = (f"This route needs an {r.access} token" if r.access == "agent" else
                      f"This route needs the {r.access} role (or more); or a request made with the session cookie "
                      "that changes something lacks its X-CSRF-Token")
    if "{" in r.path:
        out["404"] = "The id (or name) in the path names nothing this caller can see"
    if (r.access not in ("public", "agent") and r.method in WRITES) or r.conflicts:
        out["409"] = "The resource's state (or a name already taken) does not allow it"
    out.update(dict(r.also))
    if r.gone:
        out["410"] = "It existed but was deleted (artifact retention, or its file was lost); the body says why"
    if r.body is not None or r.raw_body:
        out["413"] = "The request body is too large"
    if r.body is not None or r.query is not None or "{name}" in r.path:
        out["422"] = "Invalid input; the details name each field"
    if r.database:
        out["503"] = ("The database is unavailable (code database_unavailable; the token lookup needs it too, so "
                      "an outage is never a 401), or the server is still starting (code starting); retry later")
    return out


def _success(r: Route) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "No content" if r.status == 204 else "OK"}
    if r.status == 204:
        return ok
    if r.produces != ("application/json",):
        binary = {"type": "string"} if r.produces == ("text/plain",) else {"type": "string", "format": "binary"}
        ok["content"] = {media: {"schema": binary} for media in r.produces}
        return ok
    schema: dict[str, Any] = {"type": "object"}
    if r.response is not None:
        ref = {"$ref": REF.format(model=r.response.__name__)}
        schema = {"type": "array", "items": ref} if r.many else ref
    ok["content"] = {"application/json": {"schema": schema}}
    return ok


def _request_body(r: Route) -> dict[str, Any] | None:
    if r.raw_body:
        return {"required": True, "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    if r.body is None:
        return None
    return {"required": r.body_required, "content": {
        "application/json": {"schema": {"$ref": REF.format(model=r.body.__name__)}}}}


def operation(r: Route) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": r.summary, "tags": list(r.tags), "responses": {str(r.status): _success(r)}}
    params = _path_parameters(r.path) + (_query_parameters(r.query) if r.query is not None else [])
    if params:
        op["parameters"] = params
    body = _request_body(r)
    if body is not None:
        op["requestBody"] = body
    if r.access != "public":
        op["security"] = [{"bearer": []}] if r.access == "agent" else [{"bearer": []}, {"session": []}]
        if r.access != "agent":
            op["x-role"] = r.access  # the least role that may call it (viewer < operator < admin)
    error = {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}}
    for status, why in error_statuses(r).items():
        op["responses"][status] = {"description": why, "content": error}
    if "503" in op["responses"]:
        op["responses"]["503"]["headers"] = {"Retry-After": {
            "description": f"Seconds to wait ({RETRY_AFTER_SEC})", "schema": {"type": "integer"}}}
    return op


def build_openapi(routes: "list[Route]") -> dict[str, Any]:
    models: set[type[BaseModel]] = {ErrorBody}
    for r in routes:
        models.update(m for m in (r.body, r.response) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, schemas = models_json_schema([(m, "validation") for m in ordered], ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        paths.setdefault(r.path, {})[r.method.lower()] = operation(r)
    return {
        "openapi": "3.1.0",
        "info": {"title": "phonefleet", "version": __version__,
                 "description": "Device-fleet job distribution. Socket.IO namespaces /agent and /dashboard "
                                "carry the events described in the protocol's JSON Schema. A method a path "
                                "does not serve answers 405 with an Allow header."},
        "paths": paths,
        "components": {"schemas": schemas.get("$defs", {}),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}, "session": {
                           "type": "apiKey", "in": "cookie", "name": "pf_session",
                           "description": "The dashboard's session (POST /api/session); a request that changes "
                                          "something also sends the session's X-CSRF-Token header"}}},
    }
