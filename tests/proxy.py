"""A loopback reverse proxy that can refuse or kill WebSocket traffic while HTTP keeps flowing —
the way a flaky corporate proxy or a NAT timeout breaks an agent's socket but not its polling."""

import asyncio
import contextlib

import aiohttp
from aiohttp import web


class FlakyProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.block_websockets = False
        self.block_all = False  # the server is unreachable
        self._sockets: set[web.WebSocketResponse] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        await self.kill_websockets()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def kill_websockets(self) -> None:
        for ws in list(self._sockets):
            await ws.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        target = self.upstream + request.rel_url.human_repr()
        if self.block_all:
            return web.Response(status=502, text="upstream unreachable")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if self.block_websockets:
                return web.Response(status=503, text="websockets blocked")
            return await self._relay(request, target)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.request(request.method, target, headers=headers, data=await request.read()) as r:
            body = await r.read()
            out = {k: v for k, v in r.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")}
            return web.Response(status=r.status, body=body, headers=out)

    async def _relay(self, request: web.Request, target: str) -> web.WebSocketResponse:
        assert self._session is not None
        client = web.WebSocketResponse()
        await client.prepare(request)
        self._sockets.add(client)
        try:
            async with self._session.ws_connect(target.replace("http", "ws", 1)) as upstream:
                async def down() -> None:
                    async for msg in upstream:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            await client.send_str(msg.data)
                        elif msg.type == aiohttp.WSMsgType.BINARY:
                            await client.send_bytes(msg.data)
                    await client.close()

                task = asyncio.create_task(down())
                async for msg in client:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await upstream.send_str(msg.data)
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        await upstream.send_bytes(msg.data)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            self._sockets.discard(client)
        return client
