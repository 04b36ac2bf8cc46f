"""The web dashboard: ``dashboard/dist`` (built with Vite) served at ``/``, its files under ``/assets/``.

The dashboard routes by URL fragment (``/#/jobs/12``), so the server needs only ``/`` and the assets.
When the dashboard has not been built, ``/`` answers a short page saying how to build it.
"""

import os
from pathlib import Path

from aiohttp import web

import phonefleet

DIST_ENV = "PHONEFLEET_DASHBOARD_DIST"
DASHBOARD_PATHS = ("/", "/assets/{name}")
"""Routes this module adds: not part of the REST contract, so not in the OpenAPI document."""

MISSING_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>phonefleet</title></head>
<body style="font-family: sans-serif; max-width: 40rem; margin: 3rem auto">
<h1>phonefleet</h1>
<p>The web dashboard has not been built. Run <code>npm ci &amp;&amp; npm run build</code> in
<code>dashboard/</code>, then reload this page.</p>
<p>The REST API is under <a href="/api/openapi.json"><code>/api</code></a>.</p>
</body></html>
"""

IMMUTABLE = "public, max-age=31536000, immutable"


def dashboard_dist() -> Path:
    """Where the built dashboard is: ``$PHONEFLEET_DASHBOARD_DIST``, the package's ``_dashboard``
    (an installed wheel), or the checkout's ``dashboard/dist``."""
    configured = os.environ.get(DIST_ENV)
    if configured:
        return Path(configured)
    packaged = Path(phonefleet.__file__).resolve().parent / "_dashboard"
    if (packaged / "index.html").is_file():
        return packaged
    return Path(phonefleet.__file__).resolve().parent.parent / "dashboard" / "dist"


def add_dashboard_routes(app: web.Application, dist: Path) -> None:
    """``GET /`` (index.html, never cached: it names the current assets) and ``GET /assets/{name}``
    (content-hashed file names, cached for good)."""
    index = dist / "index.html"
    assets = (dist / "assets").resolve()

    async def index_page(_request: web.Request) -> web.StreamResponse:
        if not index.is_file():
            return web.Response(text=MISSING_PAGE, content_type="text/html", headers={"Cache-Control": "no-store"})
        return web.FileResponse(index, headers={"Cache-Control": "no-cache"})

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = (assets / name).resolve()
        if not path.is_relative_to(assets) or not path.is_file():
            raise web.HTTPNotFound(reason="no such asset")
        return web.FileResponse(path, headers={"Cache-Control": IMMUTABLE})

    app.router.add_get("/", index_page)
    app.router.add_get("/assets/{name:.+}", asset)
