"""The OpenAPI document describes every route the server answers, with its bodies."""

from phonefleet.server.api import ROUTES
from phonefleet.server.static import DASHBOARD_PATHS
from tests.conftest import ADMIN, RunningServer


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


async def test_livez_answers_while_every_pooled_connection_is_taken(server: RunningServer) -> None:
    """A load balancer's check on a node busy with a large fan-out: the process answers, the pool is not asked."""
    pool = server.services.pool
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        status, body = await server.request("GET", "/livez", token=None)
        assert status == 200 and body["status"] == "ok" and body["version"], body
    finally:
        for conn in held:
            await pool.release(conn)


async def test_health_and_metrics_are_public(server: RunningServer) -> None:
    status, body = await server.request("GET", "/healthz", token=None)
    assert status == 200 and body["database"] == "ok"
    status, text = await server.request("GET", "/metrics", token=None)
    assert status == 200 and "phonefleet_assignments_created" in text


async def test_list_endpoints_are_documented_as_arrays(server: RunningServer) -> None:
    _, doc = await server.request("GET", "/api/openapi.json", token=None)
    for path in ("/api/devices", "/api/agents", "/api/assignments/{id}/artifacts"):
        schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema["type"] == "array" and "$ref" in schema["items"], (path, schema)
    for path in ("/api/devices", "/api/agents"):
        status, body = await server.request("GET", path)
        assert status == 200 and isinstance(body, list)


async def test_every_error_a_route_can_answer_is_documented(server: RunningServer) -> None:
    _, doc = await server.request("GET", "/api/openapi.json", token=None)
    for route in ROUTES:
        responses = doc["paths"][route.path][route.method.lower()]["responses"]
        expected = {str(route.status)}
        if route.access != "public":
            expected |= {"401", "403"}
        if "{" in route.path:
            expected.add("404")
        if route.body is not None or route.raw_body:
            expected |= {"413", "422"}
        if route.query is not None or "{name}" in route.path:  # a bad query, or a bad file name
            expected.add("422")
        if route.database:
            expected.add("503")
        if (route.access not in ("public", "agent") and route.method != "GET") or route.conflicts:
            expected.add("409")
        if route.gone:
            expected.add("410")
        expected |= {status for status, _why in route.also}
        assert set(responses) == expected, (route.method, route.path, sorted(responses))
        for status, response in responses.items():
            if status >= "400":
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorBody"), (route.path, status)


async def test_a_method_a_path_does_not_serve_answers_405_with_allow(server: RunningServer) -> None:
    served: dict[str, set[str]] = {}
    for route in ROUTES:
        served.setdefault(route.path, set()).add(route.method)
    for path, methods in served.items():
        url = path.replace("{id}", "1").replace("{name}", "shot.png")
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - methods:
            async with server.session.request(method, server.url + url,
                                              headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                assert r.status == 405, (method, path, r.status)
                assert set(r.headers["Allow"].split(",")) == methods, (method, path, r.headers.get("Allow"))
                assert (await r.json())["error"]["code"] == "method_not_allowed"
    # A word where an id goes is another path, not an unknown id: POST-only /api/jobs/batch answers 405.
    status, body = await server.request("PATCH", "/api/jobs/batch", json={"status": "paused"})
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
