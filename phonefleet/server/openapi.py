"""The OpenAPI 3.1 document, built from the route table and the protocol's models."""

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from phonefleet import __version__
from phonefleet.protocol.models import ErrorBody

if TYPE_CHECKING:
    from phonefleet.server.api import Route

REF = "#/components/schemas/{model}"


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    return [
        {"name": name, "in": "query", "required": name in schema.get("required", []), "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def build_openapi(routes: "list[Route]") -> dict[str, Any]:
    models: set[type[BaseModel]] = {ErrorBody}
    for r in routes:
        models.update(m for m in (r.body, r.response) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    refs, schemas = models_json_schema(
        [(m, "validation") for m in ordered], ref_template=REF
    )
    del refs
    error_ref = {"$ref": REF.format(model="ErrorBody")}
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {"summary": r.summary, "tags": list(r.tags), "responses": {}}
        params = [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}] \
            if "{id}" in r.path else []
        if "{name}" in r.path:
            params.append({"name": "name", "in": "path", "required": True, "schema": {"type": "string"}})
        if r.query is not None:
            params += _query_parameters(r.query)
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": {"$ref": REF.format(model=r.body.__name__)}}}}
        ok: dict[str, Any] = {"description": "OK"}
        if r.response is not None:
            ok["content"] = {"application/json": {"schema": {"$ref": REF.format(model=r.response.__name__)}}}
        op["responses"][str(r.status)] = ok
        if r.access != "public":
            op["security"] = [{"bearer": []}]
            op["responses"]["401"] = {"description": "No or unknown token",
                                      "content": {"application/json": {"schema": error_ref}}}
            op["responses"]["403"] = {"description": "Wrong kind of token",
                                      "content": {"application/json": {"schema": error_ref}}}
        if r.body is not None or r.query is not None:
            op["responses"]["422"] = {"description": "Invalid input; details name the field",
                                      "content": {"application/json": {"schema": error_ref}}}
        if "{id}" in r.path:
            op["responses"]["404"] = {"description": "Unknown id",
                                      "content": {"application/json": {"schema": error_ref}}}
        if r.method in ("PATCH", "DELETE"):
            op["responses"]["409"] = {"description": "Impossible transition",
                                      "content": {"application/json": {"schema": error_ref}}}
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "phonefleet", "version": __version__,
                 "description": "Device-fleet job distribution. Socket.IO namespaces /agent and /dashboard "
                                "carry the events described in the protocol's JSON Schema."},
        "paths": paths,
        "components": {"schemas": schemas.get("$defs", {}),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
