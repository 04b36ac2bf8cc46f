"""The HTTP listener of a real server: a client that does not send its request head in time is closed.

aiohttp has no header-read timeout of its own (a slowloris client trickling a request line keeps a
connection and a handler task for as long as it likes). ``HeadDeadline`` wraps each connection's
protocol and closes it when its first request head is not complete within ``header_timeout_sec`` of
opening; for later requests on a kept-alive connection, aiohttp's keep-alive deadline, set to the
same value, closes a connection whose next head has not arrived by then. A request being handled
(a websocket included) is never cut by either.
"""

import asyncio
import logging
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")


class HeadDeadline(asyncio.Protocol):
    """Relays everything to aiohttp's handler; only watches for the end of the first request head."""

    def __init__(self, inner: asyncio.Protocol, timeout_sec: float) -> None:
        self.inner = inner
        self.timeout_sec = timeout_sec
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(self.timeout_sec, self._expire)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            seen = self._tail + data
            if any(end in seen for end in _HEAD_ENDS):
                self._disarm()
            else:
                self._tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._tail = b""

    def _expire(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            log.info("closed a connection that sent no complete request head",
                     extra={"peer": self._transport.get_extra_info("peername"), "timeout_sec": self.timeout_sec})
            self._transport.close()


class GuardedTCPSite(web.BaseSite):
    """A ``TCPSite`` whose connections go through ``HeadDeadline``."""

    __slots__ = ("_guard_runner", "_header_timeout_sec", "_host", "_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, header_timeout_sec: float) -> None:
        super().__init__(runner)
        self._guard_runner = runner
        self._host = host
        self._port = port
        self._header_timeout_sec = header_timeout_sec

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._guard_runner.server
        assert server is not None

        def protocol() -> HeadDeadline:
            return HeadDeadline(server(), self._header_timeout_sec)

        self._server = await asyncio.get_running_loop().create_server(protocol, self._host, self._port)


REQUEST_LINE_MAX = 32_768
"""The longest request line (and header line) read, in bytes; aiohttp's own limit is 8,190. A list's text
filters, each up to a few hundred characters, percent-encoded at up to 12 bytes a character, can pass 8,190
together: such a query must reach the handler and get its JSON 422 naming the field, not aiohttp's plain-text
400 before any handler runs."""


def app_runner(app: web.Application, header_timeout_sec: float, **kwargs: Any) -> web.AppRunner:
    """The runner for ``GuardedTCPSite``: aiohttp's keep-alive deadline is the head deadline of later requests."""
    return web.AppRunner(app, keepalive_timeout=header_timeout_sec, max_line_size=REQUEST_LINE_MAX,
                         max_field_size=REQUEST_LINE_MAX, **kwargs)
