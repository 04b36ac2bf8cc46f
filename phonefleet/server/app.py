"""The application factory: everything is wired here, nothing is global."""

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from aiohttp import web

from phonefleet.server.agent_events import AgentEvents
from phonefleet.server.api import Api, error_middleware
from phonefleet.server.artifacts import ArtifactStore
from phonefleet.server.auth import ADMIN_PREFIX, Authenticator, hash_token, new_token
from phonefleet.server.bus import Bus
from phonefleet.server.completion import Completion
from phonefleet.server.config import Settings
from phonefleet.server.database import EmbeddedPostgres, create_pool, migrate, wait_for_database
from phonefleet.server.distributor import Distributor
from phonefleet.server.job_control import JobControl
from phonefleet.server.maintenance import FillSweeper, JobActivator, LeaseRescuer, Maintenance
from phonefleet.server.metrics import Metrics
from phonefleet.server.pauses import Pauses
from phonefleet.server.realtime import Realtime
from phonefleet.server.scheduler_control import SchedulerControl
from phonefleet.server.schedules import ScheduleFirer, Schedules
from phonefleet.server.static import add_dashboard_routes, dashboard_dist
from phonefleet.server.store import agents as agents_store

log = logging.getLogger(__name__)


@dataclass
class Services:
    """The running parts of one server process; tests reach in here to drive maintenance."""

    settings: Settings
    dsn: str
    pool: asyncpg.Pool
    realtime: Realtime
    distributor: Distributor
    completion: Completion
    jobs: JobControl
    pauses: Pauses
    agent_events: AgentEvents
    scheduler: SchedulerControl
    schedules: Schedules
    maintenance: Maintenance
    bus: Bus
    admin_token: str | None


SERVICES = web.AppKey("services", Services)


def _read_token(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def _save_token(path: Path, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token + "\n")
    path.chmod(0o600)


async def ensure_admin_token(pool: asyncpg.Pool, data_dir: Path, env_token: str | None) -> str | None:
    """The token to print at start-up: the configured one, or one made once and kept in the data dir."""
    if env_token:
        return env_token
    path = data_dir / "admin_token"
    async with pool.acquire() as conn:
        token = _read_token(path)
        if token and await agents_store.admin_token_exists(conn, hash_token(token)):
            return token
        token = new_token(ADMIN_PREFIX)
        await agents_store.add_admin_token(conn, "initial", hash_token(token))
    _save_token(path, token)
    return token


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[error_middleware])
    metrics = Metrics()
    authenticator = Authenticator(settings.admin_token)
    realtime = Realtime(authenticator, metrics, progress_hz=settings.progress_hz, grace_sec=settings.agent_grace_sec,
                        ping_interval_sec=settings.socket_ping_interval_sec,
                        ping_timeout_sec=settings.socket_ping_timeout_sec)
    realtime.sio.attach(app)
    api = Api(authenticator, metrics, settings.agent_grace_sec, ArtifactStore(settings.data_dir / "artifacts"))
    api.register(app)
    add_dashboard_routes(app, dashboard_dist())

    async def close_sockets(_app: web.Application) -> None:
        """Close agent and dashboard sockets first, so shutdown does not wait on them (agents reconnect)."""
        if realtime.sio.eio.sockets:
            await realtime.sio.eio.disconnect()
        await realtime.sio.shutdown()

    app.on_shutdown.append(close_sockets)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        embedded: EmbeddedPostgres | None = None
        dsn = settings.database_url
        if dsn is None:
            embedded = EmbeddedPostgres(settings.data_dir)
            dsn = embedded.start()
        await wait_for_database(dsn)
        pool = await create_pool(dsn, min_size=settings.db_pool_min, max_size=settings.db_pool_max)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
            admin_token = await ensure_admin_token(pool, settings.data_dir, settings.admin_token)
            distributor = Distributor(pool, realtime, metrics)
            completion = Completion(pool, realtime, distributor, metrics, settings)
            jobs = JobControl(pool, realtime, distributor)
            pauses = Pauses(pool, realtime, distributor)
            agent_events = AgentEvents(pool, realtime, distributor, completion=completion, pauses=pauses,
                                       settings=settings)
            realtime.agent_handler = agent_events.handle
            realtime.on_fill = distributor.request_fill
            scheduler = SchedulerControl(pool, realtime, distributor, settings.agent_grace_sec)
            schedules = Schedules(pool, jobs, realtime)
            maintenance = Maintenance(pool, dsn, [
                LeaseRescuer(pool, completion, realtime, settings),
                ScheduleFirer(pool, schedules, jobs, settings),
                JobActivator(pool, jobs, distributor, realtime),
                FillSweeper(distributor),
            ], settings)
            bus = Bus(dsn, pool)
            services = Services(settings, dsn, pool, realtime, distributor, completion, jobs, pauses,
                                agent_events, scheduler, schedules, maintenance, bus, admin_token)
            app[SERVICES] = services
            api.bind(pool, jobs=jobs, pauses=pauses, agent_events=agent_events, scheduler=scheduler,
                     schedules=schedules)
            await bus.start()
            await realtime.start(pool, bus)
            await distributor.start()
            completion.start()
            await maintenance.start()
            try:
                yield
            finally:
                await maintenance.stop()
                await completion.stop()
                await distributor.stop()
                await realtime.stop()
                await bus.stop()
        finally:
            try:  # a query stuck on a dying database must not hold the shutdown forever
                await asyncio.wait_for(pool.close(), timeout=5)
            except TimeoutError:
                pool.terminate()
            if embedded is not None:
                embedded.stop()

    app.cleanup_ctx.append(lifecycle)
    return app
