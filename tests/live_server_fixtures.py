"""A real server on a loopback port whose event loop runs in a thread of its own, for synchronous
clients (schemathesis drives ``requests`` from plain test functions) that would otherwise block the
test's loop, and so the server, while they wait for an answer."""

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from phonefleet.sim.agent import SimAgent
from tests.conftest import RunningServer, _with_db, create_database, drop_database, start_server, test_settings

T = TypeVar("T")

"""The threaded server's agent's token, known before the server starts (a schema loaded at import uses it)."""


class ThreadedServer:
    """``run`` executes a coroutine on the server's loop and waits for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="live-server", daemon=True)
        self._thread.start()
        self._server: RunningServer | None = None
        self.agent: SimAgent | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def server(self) -> RunningServer:
        assert self._server is not None
        return self._server

    @property
    def url(self) -> str:
        return self.server.url

    def start(self, dsn: str, data_dir: Path) -> None:
        self._server = self.run(start_server(test_settings(dsn, data_dir)))
        self.agent = self.run(self._agent("pc", 3))

    async def _agent(self, name: str, phones: int) -> SimAgent:
        self.agent_token = await self.server.add_agent(name)
        agent = SimAgent(self.url, self.agent_token, [f"{name}-{i:03d}" for i in range(phones)])
        self.server.clients.append(agent)
        await agent.connect()
        return agent

    def stop(self) -> None:
        if self._server is not None:
            self.run(self._server.close())
            self._server = None

    def shutdown(self) -> None:
        self.stop()
        self.run(_cancel_leftovers())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


async def _cancel_leftovers() -> None:
    """Tasks the closed server left (a socket's ping) end before their loop does."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture(scope="module")
def threaded_server(pg_root: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[ThreadedServer]:
    """One server (and database) for a module's synchronous tests, with an agent of three phones."""
    live = ThreadedServer()
    name = live.run(create_database(pg_root, template_db))
    try:
        live.start(_with_db(pg_root, name), tmp_path_factory.mktemp("live"))
        yield live
    finally:
        live.stop()
        live.run(drop_database(pg_root, name))
        live.shutdown()
