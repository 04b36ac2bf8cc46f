"""The OpenAPI document describes every route the server answers, with its bodies."""

from phonefleet.server.static import DASHBOARD_PATHS
from tests.conftest import RunningServer


async def test_openapi_describes_every_route_and_body(server: RunningServer) -> None:
    status, doc = await server.request("GET", "/api/openapi.json", token=None)
    assert status == 200
    assert doc["openapi"].startswith("3.")
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for resource in server.app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        if path is None or path.startswith("/socket.io") or path in DASHBOARD_PATHS:
            continue
        for route in resource:
            if route.method not in ("HEAD", "*", "OPTIONS"):
                served.add((route.method, path))
    assert served == documented
    create = doc["paths"]["/api/jobs"]["post"]
    ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/JobCreate")
    schemas = doc["components"]["schemas"]
    assert "OpenUrlStep" in schemas and "JobFilters" in schemas
    assert set(create["responses"]) >= {"201", "401", "403", "422"}


async def test_health_and_metrics_are_public(server: RunningServer) -> None:
    status, body = await server.request("GET", "/healthz", token=None)
    assert status == 200 and body["database"] == "ok"
    status, text = await server.request("GET", "/metrics", token=None)
    assert status == 200 and "phonefleet_assignments_created" in text
