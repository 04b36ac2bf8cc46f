"""A TCP proxy on loopback that breaks links the ways real networks do, for tests, benchmarks and the soak.

Between an agent and the server it can pass traffic, **cut** every connection at once (RST, as a
pulled cable seen by a router), **refuse** new connections (server unreachable), or **stall**:
keep every connection open but silently drop what flows through it, in both directions, with no
FIN and no RST (a half-open link behind a NAT or a dead Wi-Fi). New connections made while
stalled are accepted and held, silent, as a SYN into a black hole would hang. ``stall(new="pass")``
is the other half-open case: a NAT that lost its state blackholes the connections open at that
moment, while new ones go through (so polling, or a fresh socket, works again at once).
``stall(replies_only=True)`` kills only the way back: what the client sends still reaches the
server, which acts on it, but its answers are lost (a request done whose acknowledgement never came).
"""

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["pass", "refuse", "stall"]
NewConnections = Literal["hold", "pass"]
Direction = Literal["up", "down"]
"""up: client to upstream (requests); down: upstream to client (answers)."""
BOTH: frozenset[Direction] = frozenset(("up", "down"))


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    dropping: frozenset[Direction] = frozenset()
    """Directions whose bytes are dropped (set by ``stall``; the connection stays open)."""


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), not FIN: the peer sees ``connection reset``."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpFaultProxy:
    """``await proxy.start()`` returns the port to connect to instead of ``upstream``."""

    def __init__(self, upstream_host: str, upstream_port: int, *, listen_port: int = 0,
                 upstream_unix: str | None = None) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.upstream_unix = upstream_unix
        """A Unix socket to relay to instead of ``upstream_host:upstream_port`` (an embedded PostgreSQL)."""
        self.listen_port = listen_port
        self.mode: Mode = "pass"
        self.port = 0
        self.connections = 0
        """Connections accepted so far (a test can wait for a reconnect)."""
        self.stalled_bytes = 0
        """Bytes swallowed while stalled (a test can wait until a request is stuck in the link)."""
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.listen_port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    # ------------------------------------------------------------------ faults

    def cut(self) -> None:
        """Reset every open connection now (new ones are still accepted unless the mode says otherwise)."""
        for link in list(self._links):
            self._drop(link, reset=True)

    def refuse(self) -> None:
        """Reset open connections and refuse new ones until ``heal``."""
        self.mode = "refuse"
        self.cut()

    def stall(self, new: NewConnections = "hold", *, replies_only: bool = False) -> None:
        """Half-open: every open connection stays up but nothing gets through either way, until ``heal``.

        ``new="hold"``: connections made meanwhile are held silent (the network is a black hole, or its
        way back is: a handshake cannot complete); ``new="pass"``: they go through (a NAT dropped its
        state: only what was open is dead). ``replies_only``: open connections still carry what the
        client sends, and drop only what comes back.
        """
        for link in self._links:
            link.dropping = frozenset(("down",)) if replies_only else BOTH
        if new == "hold":
            self.mode = "stall"

    @property
    def stalled(self) -> int:
        """Connections open now whose traffic is dropped."""
        return sum(bool(link.dropping) for link in self._links)

    def heal(self) -> None:
        """Pass traffic again. Connections that were stalled stay silent: the bytes they lost are gone, so
        they are reset (the peers notice and reconnect, as after a real outage)."""
        self.mode = "pass"
        for link in list(self._links):
            if link.dropping:
                self._drop(link, reset=True)

    # ------------------------------------------------------------------ relaying

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "refuse":
            _reset(writer)
            return
        link = _Link(writer, dropping=BOTH if self.mode == "stall" else frozenset())
        self._links.add(link)
        if link.dropping:  # held open, never answered
            link.tasks.append(asyncio.create_task(self._swallow(reader, link)))
            return
        try:
            if self.upstream_unix is not None:
                up_reader, up_writer = await asyncio.open_unix_connection(self.upstream_unix)
            else:
                up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            self._drop(link, reset=True)
            return
        link.upstream = up_writer
        link.tasks += [asyncio.create_task(self._pump(reader, up_writer, link, "up")),
                       asyncio.create_task(self._pump(up_reader, writer, link, "down"))]

    async def _swallow(self, reader: asyncio.StreamReader, link: _Link) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                self.stalled_bytes += len(data)
        self._drop(link, reset=False)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link,
                    direction: Direction) -> None:
        try:
            while data := await reader.read(65536):
                if direction in link.dropping:
                    self.stalled_bytes += len(data)
                    continue  # dropped on the floor: no FIN, no RST
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        if link.dropping:
            return  # a black hole swallows FINs and RSTs too: the other end stays open, silent, until heal or cut
        self._drop(link, reset=False)

    def _drop(self, link: _Link, *, reset: bool) -> None:
        if link not in self._links:
            return
        self._links.discard(link)
        for w in (link.client, link.upstream):
            if w is None:
                continue
            if reset:
                _reset(w)
            else:
                w.close()
        current = asyncio.current_task()
        for task in link.tasks:
            if task is not current:
                task.cancel()
