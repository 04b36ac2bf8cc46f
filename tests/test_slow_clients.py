"""A client that does not send its request head in time is closed (slowloris), by the real server
process; a normal request, a kept-alive connection in use and a long-lived websocket are not."""

import asyncio
import contextlib

import aiohttp
import socketio
from aiohttp import web

from phonefleet.protocol import events as ev
from phonefleet.server.listener import GuardedTCPSite
from tests.conftest import ADMIN, free_port
from tests.server_processes import ServerProcess

TIMEOUT = 1.0


async def _open(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _closed_by_server(reader: asyncio.StreamReader, within: float = 15.0) -> bytes:
    """Everything the server sent until it closed the connection (fails if it never does)."""
    received = b""
    async with asyncio.timeout(within):
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                received += chunk
    return received


async def _trickle(writer: asyncio.StreamWriter, sent: list[int]) -> None:
    """A request line and headers, one byte at a time, never ending."""
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: yes\r\n" * 1000
    with contextlib.suppress(OSError):
        for byte in head:
            writer.write(bytes([byte]))
            await writer.drain()
            sent[0] += 1
            await asyncio.sleep(0.05)


async def test_a_trickling_request_head_is_closed_while_a_websocket_lives_on(server_process: ServerProcess) -> None:
    url = await server_process(HEADER_TIMEOUT_SEC=str(TIMEOUT))
    dashboard = socketio.AsyncClient(reconnection=False)
    await dashboard.connect(url, namespaces=[ev.DASHBOARD_NAMESPACE], auth={"token": ADMIN},
                            transports=["websocket"], wait_timeout=10)
    try:
        reader, writer = await _open(url)
        loop = asyncio.get_running_loop()
        started, sent = loop.time(), [0]
        trickle = asyncio.create_task(_trickle(writer, sent))
        received = await _closed_by_server(reader)
        elapsed = loop.time() - started
        trickle.cancel()
        writer.close()
        assert received == b"", received  # closed, not answered
        assert TIMEOUT * 0.9 <= elapsed < 10, elapsed
        assert sent[0] >= 5, "the client kept sending bytes: trickling does not reset the deadline"

        # The websocket opened before the slow client has outlived the deadline and still answers.
        assert dashboard.connected
        ack = await dashboard.call("anything", {}, namespace=ev.DASHBOARD_NAMESPACE, timeout=10)
        assert ack["error"]["code"] == "unknown_event"
        async with aiohttp.ClientSession() as session, session.get(url + "/healthz") as r:
            assert r.status == 200
    finally:
        await dashboard.disconnect()


async def test_a_silent_connection_is_closed(server_process: ServerProcess) -> None:
    url = await server_process(HEADER_TIMEOUT_SEC=str(TIMEOUT))
    reader, writer = await _open(url)
    assert await _closed_by_server(reader) == b""
    writer.close()


async def test_a_kept_alive_connection_serves_requests_then_closes_when_idle(server_process: ServerProcess) -> None:
    url = await server_process(HEADER_TIMEOUT_SEC=str(TIMEOUT))
    reader, writer = await _open(url)
    for _ in range(3):  # requests in a row on one connection, each well within the deadline
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        await asyncio.wait_for(reader.readexactly(length), 10)
    loop = asyncio.get_running_loop()
    idle_since = loop.time()
    assert await _closed_by_server(reader) == b""
    assert loop.time() - idle_since >= TIMEOUT * 0.9
    writer.close()


async def test_the_head_deadline_needs_no_help_from_keep_alive() -> None:
    """``GuardedTCPSite`` alone (aiohttp's keep-alive left at its hour-long default) closes a trickler;
    older aiohttp releases arm no deadline at all before a connection's first request."""
    app = web.Application()
    app.router.add_get("/", _ok)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await GuardedTCPSite(runner, "127.0.0.1", port, header_timeout_sec=TIMEOUT).start()
    try:
        reader, writer = await _open(f"http://127.0.0.1:{port}")
        trickle = asyncio.create_task(_trickle(writer, [0]))
        assert await _closed_by_server(reader) == b""
        trickle.cancel()
        writer.close()
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as r:
            assert r.status == 200 and await r.text() == "ok"
    finally:
        await runner.cleanup()


async def _ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")
