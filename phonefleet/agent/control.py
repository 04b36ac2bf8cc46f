"""The agent's loopback control endpoint, used by ``phonefleet-agent pause|resume|status|devices``.

It listens on 127.0.0.1 only and asks for a token kept (mode 0600) in the state directory, next to
the port, so only the agent's own user on this PC can steer it.
"""

import json
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

CONTROL_FILE = "control.json"


class FieldError(ValueError):
    """A request's field is wrong: answered 400 with the field named, and nothing changed."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Controlled(Protocol):
    def status(self) -> dict[str, Any]: ...

    def pause(self, scope: str, serial: str | None = None, job_id: int | None = None, *, resume: bool = False
              ) -> dict[str, Any]: ...

    def devices(self) -> list[dict[str, Any]]: ...

    async def virtual(self, serial: str | None, action: str | None) -> dict[str, Any]: ...

    async def virtual_fault(self, serial: str, fault: object, flap_sec: object = None) -> dict[str, Any]: ...


class ControlServer:
    def __init__(self, agent: Controlled, state_dir: Path, port: int = 0) -> None:
        self.agent = agent
        self.state_dir = state_dir
        self.port = port
        self.token = secrets.token_urlsafe(24)
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/status", self._status)
        app.router.add_get("/devices", self._devices)
        app.router.add_post("/pause", self._pause)
        app.router.add_post("/resume", self._resume)
        app.router.add_get("/virtual", self._virtual)
        app.router.add_post("/virtual/{serial}/fault", self._virtual_fault)
        app.router.add_post("/virtual/{serial}/{action}", self._virtual)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        path = self.state_dir / CONTROL_FILE
        path.write_text(json.dumps({"port": self.port, "token": self.token}))
        path.chmod(0o600)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        (self.state_dir / CONTROL_FILE).unlink(missing_ok=True)

    @web.middleware
    async def _auth(self, request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            return await handler(request)
        except FieldError as exc:
            return web.json_response({"error": str(exc), "field": exc.field}, status=400)
        except (ValueError, KeyError) as exc:
            return web.json_response({"error": str(exc)}, status=400)

    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response(self.agent.status())

    async def _devices(self, _request: web.Request) -> web.Response:
        return web.json_response(self.agent.devices())

    async def _pause(self, request: web.Request, *, resume: bool = False) -> web.Response:
        body = await request.json()
        job = body.get("job_id")
        return web.json_response(self.agent.pause(str(body.get("scope", "agent")), body.get("serial"),
                                                  int(job) if job is not None else None, resume=resume))

    async def _resume(self, request: web.Request) -> web.Response:
        return await self._pause(request, resume=True)

    async def _virtual_fault(self, request: web.Request) -> web.Response:
        """``{"fault": "hot"}`` (``flap_sec`` too for ``flap``): the phone acts it out until told ``none``."""
        try:
            body = await request.json()
        except ValueError:
            raise FieldError("body", "a JSON object is required") from None
        if not isinstance(body, dict):
            raise FieldError("body", "a JSON object is required")
        unknown = sorted(set(body) - {"fault", "flap_sec"})
        if unknown:
            raise FieldError(unknown[0], "unknown field")
        if "fault" not in body:
            raise FieldError("fault", "required")
        return web.json_response(await self.agent.virtual_fault(request.match_info["serial"], body["fault"],
                                                                body.get("flap_sec")))

    async def _virtual(self, request: web.Request) -> web.Response:
        return web.json_response(await self.agent.virtual(request.match_info.get("serial"),
                                                          request.match_info.get("action")))
