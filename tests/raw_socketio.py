"""A Socket.IO client written by hand over a plain WebSocket, for tests that must send what no library
would: packets with invalid JSON, an event that is not an array, and so on.

Engine.IO v4 over WebSocket: the server opens with ``0{...}``; Socket.IO packets travel as Engine.IO
messages (``4`` + packet): ``40/ns,{auth}`` connects, ``42/ns,ID[...]`` is an event asking for ack ID,
``43/ns,ID[...]`` the ack. The server's pings (``2``) are answered (``3``) while waiting.
"""

import asyncio
import contextlib
import json
from types import TracebackType
from typing import Any

import aiohttp


class RawSocketIO:
    def __init__(self, server_url: str) -> None:
        self.url = server_url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def __aenter__(self) -> "RawSocketIO":
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.url)
        opened = await self._next()
        assert opened.startswith("0{"), opened
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._session is not None:
            await self._session.close()

    async def _next(self, timeout: float = 10) -> str:
        assert self._ws is not None
        while True:
            msg = await self._ws.receive(timeout=timeout)
            assert msg.type == aiohttp.WSMsgType.TEXT, f"socket ended: {msg.type} {msg.data!r}"
            text = str(msg.data)
            if text == "2":  # Engine.IO ping
                await self._ws.send_str("3")
                continue
            return text

    async def send(self, packet: str) -> None:
        """Send one Socket.IO packet as is (the Engine.IO ``4`` is added here)."""
        assert self._ws is not None
        await self._ws.send_str("4" + packet)

    async def connect(self, namespace: str, auth: dict[str, Any]) -> None:
        await self.send(f"0{namespace},{json.dumps(auth)}")
        answer = await self._next()
        assert answer.startswith(f"40{namespace},"), answer

    async def ack(self, namespace: str, ack_id: int, timeout: float = 10) -> Any:
        """The payload of the ack with this id (other packets, such as server pushes, are skipped)."""
        prefix = f"43{namespace},{ack_id}"
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            assert left > 0, f"no ack {ack_id} on {namespace} within {timeout}s"
            text = await self._next(left)
            if text.startswith(prefix) and text[len(prefix):len(prefix) + 1] == "[":
                args = json.loads(text[len(prefix):])
                return args[0] if args else None

    async def call(self, namespace: str, ack_id: int, event: str, data: Any) -> Any:
        await self.send(f"2{namespace},{ack_id}{json.dumps([event, data])}")
        return await self.ack(namespace, ack_id)

    async def event(self, namespace: str, names: tuple[str, ...], timeout: float = 10) -> tuple[str, Any]:
        """The next event pushed by the server on this namespace with one of these names."""
        prefix = f"42{namespace},"
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            assert left > 0, f"no {names} on {namespace} within {timeout}s"
            text = await self._next(left)
            if text.startswith(prefix + "["):
                name, *args = json.loads(text[len(prefix):])
                if name in names:
                    return name, args[0] if args else None
